"""docs/*.md point at code that exists.

Cheap checks, no torch: every repository path a page names (``src/...``, ``tests/...``,
``benchmarks/...``, ``scripts/...``, ``examples/...``, ``docs/...``) exists; every backticked
package-relative path (``kernels/norm.py``, ``ops/_register.py``, ``integrations/hf.py``...)
exists under ``src/tritonic/``; and every backticked private name (``_norm_fwd``, ``_FWD``)
is an identifier in one of the Python files the page points at (source, tests, benchmarks,
scripts; or, for a page that points at none, somewhere under ``src/tritonic/``). A renamed kernel or moved file then fails here
instead of leaving a stale page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tritonic"
PAGES = sorted((ROOT / "docs").glob("*.md"))

# a repository path: a known top folder, then path characters, then a file extension
REPO_PATH = re.compile(r"(?<![\w/.-])((?:src|tests|benchmarks|scripts|examples|docs)/[\w./-]*?\.(?:py|sh|md|json))(?![\w/])")
# a path inside the package, in backticks: `kernels/norm.py`, `ops/_register.py`
PACKAGE_PATH = re.compile(r"`((?:kernels|ops|runtime|integrations|nn|models|bench)/[\w/]+\.py)`")
# a private name in backticks, alone: `_norm_fwd`, `_FWD`
PRIVATE_NAME = re.compile(r"`(_[A-Za-z][A-Za-z0-9_]*)`")


def _page_id(page: Path) -> str:
    return page.name


def _sources(text: str) -> list[Path]:
    files = [ROOT / p for p in REPO_PATH.findall(text) if p.endswith(".py")]
    files += [SRC / p for p in PACKAGE_PATH.findall(text)]
    return [f for f in dict.fromkeys(files) if f.is_file()]


def test_there_are_pages():
    assert PAGES, "no docs/*.md found"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_paths_exist(page):
    text = page.read_text()
    missing = [p for p in dict.fromkeys(REPO_PATH.findall(text)) if not (ROOT / p).exists()]
    missing += [p for p in dict.fromkeys(PACKAGE_PATH.findall(text)) if not (SRC / p).is_file()]
    assert not missing, f"{page.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_private_names_exist_in_the_code_the_page_points_at(page):
    text = page.read_text()
    names = list(dict.fromkeys(PRIVATE_NAME.findall(text)))
    if not names:
        return
    sources = _sources(text) or sorted(SRC.rglob("*.py"))
    code = "\n".join(f.read_text() for f in sources)
    missing = [n for n in names if not re.search(rf"(?<!\w){re.escape(n)}(?!\w)", code)]
    where = ", ".join(str(f.relative_to(ROOT)) for f in sources[:8])
    assert not missing, f"{page.name} names {missing}, found in none of {where}"
