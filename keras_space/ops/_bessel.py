"""Modified Bessel functions of the first kind for the vMF numerics, on `keras.ops`.

log I_v(x) and the ratio I_{v+1}(x) / I_v(x), for a static order v >= 0 (a
Python number: the vMF order d/2 - 1 is known when the graph is built) and
x > 0, on every backend:

- at orders nu >= 20 by the uniform (Debye) asymptotic expansion, DLMF 10.41.3,
  I_nu(nu z) ~ e^{nu eta} / ((2 pi nu)^{1/2} (1 + z^2)^{1/4}) sum_k U_k(p) / nu^k,
  with 14 terms: uniform in z in (0, inf), relative error below 1e-16 for
  nu >= 20 (the terms fall like k! / (2 pi nu)^k ... well past k = 14);
- below order 20, from order nu = v + n (n = ceil(20 - v)) down by the
  recurrence of the ratios r_j = I_{j+1} / I_j, 1 / r_j = 2 (j + 1) / x + r_{j+1}
  (backward, hence stable: every term is positive), and
  log I_v = log I_nu - sum_j log r_j.

The ratio at the top order is the difference of two expansions written so
that the O(x) parts cancel analytically (no cancellation of large logs). Both
functions are accurate to a few float64 ulps relative (log I_v absolute
~1e-15 |log I_v|), checked against mpmath for v up to 2047 and x from 1e-3 to 1e5.
"""

import math
from fractions import Fraction

from keras import ops

_TOP = 20  # the lowest order the expansion is used at
_TERMS = 14


def _debye_polynomials(terms):
    """Coefficients (lowest degree first) of U_0..U_{terms-1}, DLMF 10.41.9-10:
    U_{k+1}(p) = p^2 (1 - p^2) U_k'(p) / 2 + (1/8) int_0^p (1 - 5 t^2) U_k(t) dt."""
    polys = [[Fraction(1)]]
    for _ in range(terms - 1):
        u = polys[-1]
        nxt = [Fraction(0)] * (len(u) + 3)
        for j, c in enumerate(u):
            if j:  # p^2 (1 - p^2) j c p^{j-1} / 2
                nxt[j + 1] += Fraction(j) * c / 2
                nxt[j + 3] -= Fraction(j) * c / 2
            nxt[j + 1] += c / (8 * (j + 1))  # (1/8) int t^j
            nxt[j + 3] -= 5 * c / (8 * (j + 3))  # -(5/8) int t^{j+2}
        polys.append(nxt)
    return polys


_U = _debye_polynomials(_TERMS)


def _series_coefficients(nu):
    """sum_{k>=1} U_k(p) / nu^k as one polynomial in p (float coefficients,
    lowest degree first): nu is static, so the sum costs one Horner pass."""
    degree = max(len(u) for u in _U)
    coefficients = [0.0] * degree
    for k, u in enumerate(_U[1:], start=1):
        for j, c in enumerate(u):
            coefficients[j] += float(c) / nu**k
    while coefficients and coefficients[-1] == 0.0:
        coefficients.pop()
    return coefficients


def _horner(coefficients, p):
    total = ops.zeros_like(p) + coefficients[-1]
    for c in reversed(coefficients[:-1]):
        total = total * p + c
    return total


def _hypot(a, x):
    """sqrt(a^2 + x^2) for a static a > 0 and x > 0, without overflow."""
    big = ops.maximum(x, a)
    small = ops.minimum(x, a)
    return big * ops.sqrt(1.0 + ops.square(small / big))


def _log_series(nu, x, s):
    """log sum_k U_k(p) / nu^k with p = nu / s (as log1p of the tail)."""
    return ops.log1p(_horner(_series_coefficients(nu), nu / s))


def _top_terms(nu, x):
    """(s = sqrt(nu^2 + x^2), log of the series) at order nu: both top-order formulas
    use them, so `log_bessel_ive` computes them once."""
    s = _hypot(nu, x)
    return s, _log_series(nu, x, s)


def _log_ive_top(nu, x, terms=None):
    """log(I_nu(x) e^{-x}) by the expansion (nu >= _TOP)."""
    s, series = terms or _top_terms(nu, x)
    s_minus_x = nu * nu / (s + x)  # no cancellation
    return s_minus_x - nu * _log_ratio_over_x(nu, x, s_minus_x) - 0.5 * ops.log(2.0 * math.pi * s) + series


def _log_ratio_over_x(nu, x, s_minus_x):
    """log((nu + s) / x) = log1p((nu + s - x) / x): accurate also for x >> nu, where
    log(x / (nu + s)) would be the log of a number near 1 (times nu: 50 ulps lost at
    nu = 2047, x = 1e5)."""
    return ops.log1p((nu + s_minus_x) / x)


def _log_ratio_top(nu, x, terms=None):
    """log(I_{nu+1}(x) / I_nu(x)) by the expansion, the large parts cancelled by hand."""
    s0, series0 = terms or _top_terms(nu, x)
    s1, series1 = _top_terms(nu + 1.0, x)
    ds = (2.0 * nu + 1.0) / (s0 + s1)  # s1 - s0
    return (
        ds
        - _log_ratio_over_x(nu + 1.0, x, (nu + 1.0) ** 2 / (s1 + x))
        - nu * ops.log1p((1.0 + ds) / (nu + s0))
        - 0.5 * ops.log1p(ds / s0)
        + series1
        - series0
    )


def _start(v):
    """The order the expansion starts from: v itself, or v + n >= _TOP."""
    n = max(0, math.ceil(_TOP - v))
    return v + n, n


def _ratios(v, x, terms=None):
    """[r_v, ..., r_nu] with r_j = I_{j+1}(x) / I_j(x), nu = v + n: the top one by the
    expansion, the others by the backward recurrence."""
    nu, n = _start(v)
    ratios = [ops.exp(_log_ratio_top(nu, x, terms))]
    for j in range(n - 1, -1, -1):  # order v + j
        ratios.insert(0, 1.0 / (2.0 * (v + j + 1.0) / x + ratios[0]))
    return ratios


def log_bessel_ive(v, x):
    """log(I_v(x) e^{-x}) for a static order v >= 0 and a tensor x > 0."""
    nu, n = _start(v)
    terms = _top_terms(nu, x)
    log_ive = _log_ive_top(nu, x, terms)
    if n:
        for r in _ratios(v, x, terms)[:-1]:
            log_ive = log_ive - ops.log(r)
    return log_ive


def bessel_iv_ratio(v, x):
    """I_{v+1}(x) / I_v(x) for a static order v >= 0 and a tensor x > 0."""
    return _ratios(v, x)[0]
