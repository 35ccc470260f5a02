"""Benchmark harness: time providers side by side, print a table, write JSON rows.

    from tritonic.bench import Benchmark, main
    main(Benchmark(name=..., cases=..., providers=..., bytes=...))

See :mod:`tritonic.bench.harness` for the factory contract.
"""

from tritonic.bench.harness import (
    MODES,
    Benchmark,
    format_table,
    main,
    measure,
    run,
    write_json,
)

__all__ = ["MODES", "Benchmark", "format_table", "main", "measure", "run", "write_json"]
