"""Fit the GEMM epilogue's erf (kernels/matmul.py ``_normal_cdf``): erf(a) = 1 - 2^(-a q(a)) for
a = min(|x|, 4), with q a polynomial fitted to -log2(erfc(a)) / a on (0, 4] by least squares,
reweighted towards the worst points and weighted by erf's sensitivity to q (erfc(a) a ln 2).
Prints the coefficients (lowest degree first, float32), the float32-evaluated maximum error
against math.erf on [-6, 6], and the coefficients rescaled to GELU's units (what ``_normal_cdf``
uses: q'(a) = q(a / sqrt 2) / sqrt 2, for a = |z|).

    python scripts/fit_erf.py [--degree 8]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

A = 4.0  # erf(4) = 1 - 1.5e-8: 1.0 in float32, so larger |x| are clamped here


def fit(degree: int, n: int = 4000) -> np.ndarray:
    k = np.arange(n)
    xs = (A / 2) * (1 - np.cos((2 * k + 1) * np.pi / (2 * n)))  # Chebyshev nodes in (0, A)
    erfc = np.array([math.erfc(v) for v in xs])
    ys = -np.log2(erfc) / xs
    w = erfc * xs * math.log(2)  # d erf / d q
    V = np.vander(xs, degree + 1, increasing=True)
    W = w.copy()
    for _ in range(30):
        c, *_ = np.linalg.lstsq(V * W[:, None], ys * W, rcond=None)
        err = np.abs((V @ c - ys) * w)
        W = W * (1 + 5 * err / err.max())
    return c.astype(np.float32)


def evaluate(c: np.ndarray) -> float:
    x = np.linspace(-6, 6, 200001).astype(np.float32)
    a = np.minimum(np.abs(x), np.float32(A))
    q = np.zeros_like(a)
    for cc in c[::-1]:
        q = (q * a + cc).astype(np.float32)
    y = (np.float32(1) - np.exp2(-a * q).astype(np.float32)).astype(np.float32)
    y = np.where(x < 0, -y, y)
    return float(np.abs(y - np.array([math.erf(float(v)) for v in x])).max())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--degree", type=int, default=8)
    c = fit(p.parse_args().degree)
    print("coefficients:", ", ".join(repr(float(v)) for v in c))
    print(f"max |erf error| in float32 on [-6, 6]: {evaluate(c):.3g}")
    r = math.sqrt(2)
    print("in GELU's units:", ", ".join(repr(float(np.float32(v / r ** (k + 1)))) for k, v in enumerate(c)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
