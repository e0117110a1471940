"""Power Spherical numerics on S^{d-1} (De Cao & Aziz, 2020): log-density, KL to the
uniform sphere, and the reparameterised sampler.

PowerSpherical(mu, kappa) has density N(kappa)^{-1} (1 + <mu, x>)^kappa with, for
beta = (d - 1)/2 and alpha = beta + kappa,

    log N(kappa) = (alpha + beta) log 2 + beta log pi + lgamma(alpha) - lgamma(alpha + beta).

t = <x, mu> has (1 + t)/2 ~ Beta(alpha, beta); x = t mu + sqrt(1 - t^2) nu with nu
uniform on the unit vectors orthogonal to mu. No Bessel function and no rejection
step: t is a ratio of two Gamma draws (reparameterised in kappa through the implicit
gradient of the first, computed here: `_dgamma_dalpha`), nu a normalised normal vector
turned around mu by one Householder reflection.

Everything is `keras.ops` (plus the backend's lgamma / digamma / trigamma) in the wide
dtype (float64; float32 on JAX without x64 mode), TensorFlow and JAX.

References:
    - De Cao & Aziz, "The Power Spherical distribution", https://arxiv.org/abs/2006.04437
"""

import math

import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import _special, vmf
from keras_space.ops import _stateless_random as rnd

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(32)
_GL_NODES, _GL_WEIGHTS = 0.5 * (_GL_NODES + 1.0), 0.5 * _GL_WEIGHTS  # on [0, 1]


@keras_space_export("keras_space.ops.power_spherical_kl_to_uniform")
def power_spherical_kl_to_uniform(d, kappa):
    """KL(PowerSpherical(mu, kappa) || uniform on S^{d-1}), depending on (d, kappa) only.

    With beta = (d - 1)/2 and D(kappa) = lgamma(2 beta + kappa) - lgamma(beta + kappa),
    KL = D(kappa) - D(0) - kappa D'(kappa) = int_0^kappa s (psi'(beta + s) -
    psi'(2 beta + s)) ds >= 0, ~ kappa^2 / (4 beta) for small kappa. Below kappa =
    max(1, beta / 2) the first form would cancel (terms ~beta log beta for a value
    ~kappa^2 / beta), so there the integral is taken (32-point Gauss-Legendre: the
    integrand is analytic on a disc of radius beta around the range); above, the
    lgamma and digamma differences come from Stirling's series term by term. Gradient:
    kappa (psi'(beta + kappa) - psi'(2 beta + kappa)). Float64 tensor (wide dtype).

    Example:

    >>> from keras_space.ops import power_spherical_kl_to_uniform
    >>> round(float(power_spherical_kl_to_uniform(3, 1.0)), 10)  # log 2 - 1/2 at d = 3
    0.1931471806
    """
    d = vmf._check_dim(d)
    return _kl_to_uniform(d, vmf._checked_kappa(kappa))


@vmf._compiled("d")
def _kl_to_uniform(d, k):
    b = 0.5 * (d - 1)
    limit = max(1.0, 0.5 * b)
    d_zero = math.lgamma(2.0 * b) - math.lgamma(b)

    def value(k):
        def integral(k):
            s = ops.expand_dims(k, -1) * ops.convert_to_tensor(_GL_NODES, k.dtype)
            weights = ops.convert_to_tensor(_GL_WEIGHTS * _GL_NODES, k.dtype)
            return ops.square(k) * ops.sum(weights * _special.trigamma_drop(b + s, b), axis=-1)

        def direct(k):
            return _special.lgamma_shift(b + k, b) - d_zero - k * _special.digamma_shift(b + k, b)

        small = k < limit
        return ops.where(small, integral(ops.minimum(k, limit)), direct(ops.maximum(k, limit)))

    return vmf._with_derivative(value, lambda k: k * _special.trigamma_drop(b + k, b))(k)


@keras_space_export("keras_space.ops.power_spherical_log_prob")
def power_spherical_log_prob(x, mean_direction, kappa):
    """log density of PowerSpherical(mean_direction, kappa) at x, on S^{d-1}.

    kappa log(1 + <x, mu>) - log N(kappa), written without kappa-sized terms:
    kappa log1p(-|x - mu|^2 / 4) + lgamma(alpha + beta) - lgamma(alpha) - 2 beta log 2 -
    beta log pi (the lgamma difference by Stirling's series), so it stays accurate for
    kappa up to 1e5 and more. -inf at the antipode of mu (the density is 0 there).
    `x` and `mean_direction` are (..., d) non-zero vectors (normalised here; a NaN, inf
    or all-zero row is a `ValueError` naming it), kappa broadcasts against their
    leading shape and must be positive and finite. Float64 tensor (wide dtype).

    Example:

    >>> from keras_space.ops import power_spherical_log_prob
    >>> round(float(power_spherical_log_prob([0.0, 0.0, 1.0], [0.0, 0.0, 2.0], 1.0)), 10)
    -1.8378770664
    """  # at d = 3, kappa = 1: density 2 / (4 pi) at the mode, log(1 / (2 pi))
    x = vmf._checked_directions("x", x)
    mu = vmf._checked_directions("mean_direction", mean_direction)
    if x.shape[-1] != mu.shape[-1]:
        raise ValueError("power_spherical_log_prob: x and mean_direction must have the same "
                         f"last dimension. Received: x.shape={x.shape}, "
                         f"mean_direction.shape={mu.shape}")
    d = vmf._check_dim(x.shape[-1])
    k = vmf._checked_kappa(kappa)
    quarter_squared_distance = 0.25 * ops.sum(ops.square(x - mu), axis=-1)  # (1 - t) / 2
    return k * ops.log1p(-quarter_squared_distance) + _log_normalizer_minus(d, k)


def _log_normalizer_minus(d, k):
    """kappa log 2 - log N(kappa) = lgamma(alpha + beta) - lgamma(alpha) - 2 beta log 2 - beta log pi."""
    b = 0.5 * (d - 1)
    return _special.lgamma_shift(b + k, b) - 2.0 * b * math.log(2.0) - b * math.log(math.pi)


def _gammas(d, kappa, shape, seed):
    """Gamma((d - 1)/2 + kappa) and Gamma((d - 1)/2) draws (wide dtype): (1 + t)/2 is the
    first over their sum. The first carries the implicit gradient in kappa
    (`_dgamma_dalpha`; TensorFlow's own is 0.5 % off at alpha = 3e4, 27 % at 1e5)."""
    b = 0.5 * (d - 1)
    s_alpha, s_beta = rnd.split(seed, 2)
    wide = vmf._wide_dtype()
    alpha = ops.broadcast_to(b + vmf._as_f64(kappa), shape)
    g_alpha = vmf._pathwise(rnd.gamma(shape, s_alpha, alpha, wide), alpha, _dgamma_dalpha)
    return g_alpha, ops.stop_gradient(rnd.gamma(shape, s_beta, b, wide))


_GL64_NODES, _GL64_WEIGHTS = np.polynomial.legendre.leggauss(64)


@vmf._compiled()
def _dgamma_dalpha(g, alpha):
    """dg/dalpha at a fixed CDF value of g ~ Gamma(alpha, 1) (implicit reparameterisation).

    With p the density, dg/dalpha = -(1/p(g)) int_0^g (log s - psi(alpha)) p(s) ds
    = (1/p(g)) int_g^inf (same) (E[log S] = psi(alpha)). In y = log(s/g):

        dg/dalpha = +- g int (log g + y - psi(alpha)) exp(phi(y)) dy,
        phi(y) = alpha y - g (e^y - 1) <= 0 on the side taken:

    y >= 0 when g >= alpha, y <= 0 otherwise. phi is concave and falls from 0; the range
    ends where phi = -45 (Newton from y = 0, its step never longer than the curvature's
    scale allows), and 64-point Gauss-Legendre integrates the smooth, decaying integrand
    there.
    """
    g = ops.maximum(g, 1e-300)
    side = ops.where(g >= alpha, ops.ones_like(g), -ops.ones_like(g))  # y's sign on the side taken
    log_g = ops.log(g)

    def phi(s):  # phi(side * s), s >= 0
        return alpha * side * s - g * ops.expm1(side * s)

    def slope(s):  # d phi(side * s) / ds < 0
        return side * (alpha - g * ops.exp(side * s))

    floor = -ops.sqrt(g) - 1.0  # |slope| at least the curvature's scale: no huge first step
    s = ops.zeros_like(g)
    for _ in range(16):  # phi is concave: Newton settles on the root monotonically
        s = s - (phi(s) + 45.0) / ops.minimum(slope(s), floor)
    end = ops.expand_dims(s, -1)
    nodes = ops.convert_to_tensor(0.5 * (_GL64_NODES + 1.0), g.dtype) * end
    weights = ops.convert_to_tensor(0.5 * _GL64_WEIGHTS, g.dtype) * end
    ex = lambda t: ops.expand_dims(t, -1)  # noqa: E731
    y = ex(side) * nodes
    integrand = (ex(log_g) + y - ex(_special.digamma(alpha))) * ops.exp(
        ex(alpha) * y - ex(g) * ops.expm1(y))
    return side * g * ops.sum(weights * integrand, axis=-1)


def _sample(mu, kappa, seed):
    """PowerSpherical(mu, kappa) samples (float32) around unit rows `mu` (..., d);
    `kappa` (wide dtype) a scalar or of shape mu.shape[:-1]. Differentiable in mu and
    kappa (pathwise: the Gamma draw's implicit gradient, then smooth maps)."""
    s_gammas, s_noise = rnd.split(seed, 2)
    g_alpha, g_beta = _gammas(mu.shape[-1], kappa, ops.shape(mu)[:-1], s_gammas)
    total = g_alpha + g_beta  # t and sqrt(1 - t^2) from the draws: no cancellation
    t = ops.cast((g_alpha - g_beta) / total, "float32")
    r = ops.cast(2.0 * ops.sqrt(g_alpha * g_beta) / total, "float32")
    noise = rnd.normal(ops.shape(mu), s_noise, "float32")[..., 1:]  # (..., d - 1)
    nu = noise / ops.sqrt(ops.maximum(ops.sum(ops.square(noise), -1, keepdims=True), 1e-30))
    return _turn_to(mu, ops.expand_dims(t, -1), ops.expand_dims(r, -1) * nu)


def _turn_to(mu, t, rest):
    """H y for y = t b + (0, rest): b = -sign(mu_1) e_1, H the Householder reflection
    with H b = mu. |b - mu|^2 = 2 (1 + |mu_1|) >= 2, so nothing cancels in float32 (the
    reflection from e_1 itself loses everything as mu -> e_1). The pole b turns with the
    sign of mu_1: the sample of a fixed noise jumps there, its distribution does not."""
    first = mu[..., :1]
    sign = ops.where(first >= 0.0, ops.ones_like(first), -ops.ones_like(first))
    y = ops.concatenate([-sign * t, rest], axis=-1)
    a = ops.concatenate([-sign - first, -mu[..., 1:]], axis=-1)  # b - mu
    scale = 2.0 * ops.sum(a * y, -1, keepdims=True) / ops.sum(ops.square(a), -1, keepdims=True)
    return y - scale * a
