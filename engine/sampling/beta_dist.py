"""The inverse CDF of the Beta(a, b) distribution, for the "beta" schedule (numpy only, no scipy).

The regularized incomplete beta function I_x(a, b) is evaluated with its continued
fraction (modified Lentz), using I_x(a, b) = 1 - I_(1-x)(b, a) where the fraction
converges slowly; the quantile is bracketed by bisection and refined by Newton steps
(the CDF's derivative is the density).
"""
from __future__ import annotations

import math

import numpy as np

_TINY = 1e-300
_TERMS = 300  # continued-fraction terms; a, b near 1 converge in far fewer


def _continued_fraction(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """1 / (1 + d1 / (1 + d2 / ...)) for I_x(a, b), vectorised over x."""
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
    result = d.copy()
    for m in range(1, _TERMS + 1):
        for coef in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                     -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + coef * d
            d = 1.0 / np.where(np.abs(d) < _TINY, _TINY, d)
            c = 1.0 + coef / c
            c = np.where(np.abs(c) < _TINY, _TINY, c)
            result = result * d * c
        if np.all(np.abs(d * c - 1.0) < 1e-14):
            break
    return result


def _front(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    with np.errstate(divide="ignore"):
        return np.exp(a * np.log(x) + b * np.log1p(-x) - log_beta) / a


def beta_cdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    """I_x(a, b) for x in [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    inner = np.clip(x, 1e-300, 1 - 1e-16)
    direct = x < (a + 1.0) / (a + b + 2.0)
    low = _front(inner, a, b) * _continued_fraction(inner, a, b)
    high = 1.0 - _front(1.0 - inner, b, a) * _continued_fraction(1.0 - inner, b, a)
    out = np.where(direct, low, high)
    return np.where(x <= 0, 0.0, np.where(x >= 1, 1.0, out))


def beta_ppf(q: np.ndarray, a: float, b: float) -> np.ndarray:
    """The x with I_x(a, b) = q, for each q in [0, 1]: bisection to a bracket, then Newton inside it."""
    q = np.asarray(q, dtype=np.float64)
    lo, hi = np.zeros_like(q), np.ones_like(q)
    for _ in range(24):
        mid = (lo + hi) / 2
        below = beta_cdf(mid, a, b) < q
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    x = (lo + hi) / 2
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    for _ in range(4):
        inner = np.clip(x, 1e-300, 1 - 1e-16)
        pdf = np.exp((a - 1) * np.log(inner) + (b - 1) * np.log1p(-inner) - log_beta)
        x = np.clip(x - (beta_cdf(x, a, b) - q) / pdf, lo, hi)
    return np.where(q <= 0, 0.0, np.where(q >= 1, 1.0, x))
