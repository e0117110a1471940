"""log Gamma, digamma and trigamma on every backend (internal; `keras.ops` has none),
and their shifts f(x + a) - f(x) without the cancellation of two large values.

TensorFlow's `tf.math` or `jax.scipy.special`, in the input's dtype (float64 kept).
The shifts use Stirling's series where x >= 8 (7 terms: below float64 rounding there)
and the plain difference below, where every value is small.
"""

import math

import keras
from keras import ops


def _fn(tf_name, jax_name):
    def f(x):
        if keras.backend.backend() == "jax":
            import jax.scipy.special as special

            return getattr(special, jax_name)(x)
        import tensorflow as tf

        return getattr(tf.math, tf_name)(x)

    return f


lgamma = _fn("lgamma", "gammaln")
digamma = _fn("digamma", "digamma")


def trigamma(x):
    if keras.backend.backend() == "jax":
        import jax.scipy.special as special

        return special.polygamma(1, x)
    import tensorflow as tf

    return tf.math.polygamma(tf.ones_like(x), x)


# B_2k for k = 1..7
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)
_STIRLING_FROM = 8.0


def _series(term):
    return sum(term(k, b) for k, b in enumerate(_BERNOULLI, start=1))


def _by_size(x, large, small):
    """large(x) where x >= 8 (Stirling), small(x) elsewhere; each sees x clamped to its range."""
    big = x >= _STIRLING_FROM
    return ops.where(big, large(ops.maximum(x, _STIRLING_FROM)),
                     small(ops.minimum(x, _STIRLING_FROM)))


def lgamma_shift(x, a):
    """lgamma(x + a) - lgamma(x) for x > 0 and a constant a >= 0."""

    def large(x):  # (x - 1/2) log1p(a/x) + a log(x + a) - a + S(x + a) - S(x)
        def s(y):
            return _series(lambda k, b: b / (2 * k * (2 * k - 1)) * y ** (1 - 2 * k))
        return (x - 0.5) * ops.log1p(a / x) + a * ops.log(x + a) - a + (s(x + a) - s(x))

    return _by_size(x, large, lambda x: lgamma(x + a) - lgamma(x))


def digamma_shift(x, a):
    """digamma(x + a) - digamma(x) for x > 0 and a constant a >= 0."""

    def large(x):  # log1p(a/x) + a / (2 x (x + a)) - (T(x + a) - T(x))
        def t(y):
            return _series(lambda k, b: b / (2 * k) * y ** (-2 * k))
        return ops.log1p(a / x) + a / (2.0 * x * (x + a)) - (t(x + a) - t(x))

    return _by_size(x, large, lambda x: digamma(x + a) - digamma(x))


def trigamma_drop(x, a):
    """trigamma(x) - trigamma(x + a) (>= 0) for x > 0 and a constant a >= 0."""

    def large(x):  # 1/y + 1/(2 y^2) + sum B_2k / y^(2k + 1), differenced term by term
        def u(y):
            return _series(lambda k, b: b * y ** (-2 * k - 1))
        y = x + a
        return a / (x * y) + a * (x + y) / (2.0 * ops.square(x * y)) + (u(x) - u(y))

    return _by_size(x, large, lambda x: trigamma(x) - trigamma(x + a))


def log_sphere_area(d):
    """log of the surface area of S^{d-1}: log 2 + (d/2) log pi - lgamma(d/2)."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)
