"""von Mises-Fisher numerics on the sphere S^{d-1}: normaliser, mean resultant
length, KL to the uniform sphere, and samplers of the cosine w = <z, mu>.

vMF(mu, kappa) has density C_d(kappa) exp(kappa <mu, z>) on S^{d-1} with

    C_d(kappa) = kappa^{d/2-1} / ((2 pi)^{d/2} I_{d/2-1}(kappa)).

A sample is z = w mu + sqrt(1 - w^2) nu, nu uniform on the unit vectors
orthogonal to mu, and w in [-1, 1] with density proportional to
exp(kappa w) (1 - w^2)^{(d-3)/2}, independent of mu. In the angle
theta = arccos w the density is proportional to exp(kappa cos theta)
sin^{d-2} theta, smooth on [0, pi] for every d >= 2; the tables and the
implicit gradient below work in theta.

The Bessel functions are this package's own (`_bessel`: the uniform
asymptotic expansion and a backward recurrence of ratios, accurate to a few
ulps for d up to 4096 and kappa from 1e-3 to 1e5, where scipy's `ive`
underflows), in float64. Everything is `keras.ops` and runs on TensorFlow and
JAX; the samplers draw from explicit seeds (`_stateless_random`) inside
`keras.ops.while_loop`. On JAX, float64 needs JAX's x64 mode
(`jax.config.update("jax_enable_x64", True)` or `JAX_ENABLE_X64=1`); without
it the same code runs in float32 (relative accuracy ~1e-6 instead of ~1e-13).

References:
    - Davidson et al., "Hyperspherical Variational Auto-Encoders",
      https://arxiv.org/abs/1804.00891
    - Wood, "Simulation of the von Mises Fisher distribution" (1994),
      https://doi.org/10.1080/03610919408813161
    - Figurnov et al., "Implicit Reparameterization Gradients",
      https://arxiv.org/abs/1805.08498
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import _bessel, _special
from keras_space.ops import _dtype_safe as safe
from keras_space.ops import _stateless_random as rnd
from keras_space.utils import validation


def _wide_dtype():
    """The dtype of the vMF numerics: float64, or float32 on JAX without x64 mode."""
    if keras.backend.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


def _as_f64(x):
    """`x` in the wide dtype (Python numbers and numpy arrays converted exactly)."""
    if isinstance(x, (int, float, np.ndarray, np.generic, list, tuple)):
        return ops.convert_to_tensor(np.asarray(x, "float64"), _wide_dtype())
    return ops.cast(x, _wide_dtype())


def _compiled(*static_argnames):
    """On JAX, `jax.jit` with these arguments static (d, shapes): called eagerly,
    each of these functions is hundreds of small ops (and a while loop that JAX
    would compile anew at every call), compiled once per static signature here;
    inside a traced function (`fit`) it is inlined. Elsewhere the function itself."""

    def wrap(fn):
        if keras.backend.backend() != "jax":
            return fn
        import jax

        compiled = jax.jit(fn, static_argnames=static_argnames)

        @functools.wraps(fn)
        def call(*args, **kwargs):  # Keras variables in as their values
            args, kwargs = keras.tree.map_structure(
                lambda a: a.value if isinstance(a, keras.Variable) else a, (args, kwargs))
            return compiled(*args, **kwargs)

        return call

    return wrap


def _checked_kappa(kappa):
    """kappa in the wide dtype, refused unless positive and finite (tensors too, at run time)."""
    validation.positive_values("kappa", kappa)
    k = _as_f64(kappa)
    return validation.holds("kappa", k, ops.logical_and(k > 0, ops.isfinite(k)),
                            "positive finite values")


def _check_dim(d):
    return validation.positive_int("d", d, minimum=2)


def _with_derivative(value_fn, derivative_fn):
    """value_fn(k) whose gradient in k is derivative_fn(k) (an identity more accurate
    than differentiating through the Bessel functions)."""

    @ops.custom_gradient
    def f(k):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream * derivative_fn(k)

        return value_fn(k), grad

    return f


@keras_space_export("keras_space.ops.vmf_log_normalizer")
def vmf_log_normalizer(d, kappa):
    """log C_d(kappa), the log normaliser of vMF on S^{d-1} (float64 tensor).

    Differentiable in kappa (d log C_d / d kappa = -A_d(kappa)). As kappa -> 0
    it tends to -log|S^{d-1}|.

    Example:

    >>> from keras_space.ops import vmf_log_normalizer
    >>> float(vmf_log_normalizer(3, 1.0))  # log(1 / (2 pi (e - 1/e)))
    -2.6924636085
    """
    d = _check_dim(d)
    return _log_normalizer(d, _checked_kappa(kappa))


def _log_normalizer_branches(d):
    """The two branches of log C_d(kappa) + kappa: its power series (kappa < 2) and
    the Bessel function's (exponentially scaled, so no term grows like kappa)."""
    v = 0.5 * d - 1.0
    constant = -0.5 * d * math.log(2.0 * math.pi)

    def series(k):  # I_v(k) = (k/2)^v / Gamma(v + 1) 0F1(; v + 1; k^2 / 4)
        return (constant + v * math.log(2.0) + math.lgamma(v + 1.0)
                - ops.log1p(_hyp0f1_tail(v + 1.0, _series_argument(k))) + k)

    def direct(k):
        return constant + v * ops.log(k) - _bessel.log_bessel_ive(v, k)

    return series, direct


@_compiled("d")
def _log_normalizer(d, k):
    series, direct = _log_normalizer_branches(d)
    return _with_derivative(lambda k: _by_size(k, series, direct) - k,
                            lambda k: -_mean_resultant_length(d, k))(k)


@_compiled("d")
def _log_normalizer_plus_kappa(d, k):
    """log C_d(kappa) + kappa, the log normaliser of exp(kappa (<z, mu> - 1)): no term
    as large as kappa, so nothing cancels (kappa up to 1e5 in float32 too). Its
    derivative is 1 - A_d(kappa)."""
    series, direct = _log_normalizer_branches(d)
    return _with_derivative(lambda k: _by_size(k, series, direct),
                            lambda k: 1.0 - _mean_resultant_length(d, k))(k)


@keras_space_export("keras_space.ops.vmf_mean_resultant_length")
def vmf_mean_resultant_length(d, kappa):
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa) = E[<z, mu>] (float64 tensor).

    Example:

    >>> from keras_space.ops import vmf_mean_resultant_length
    >>> round(float(vmf_mean_resultant_length(3, 10.0)), 6)  # coth(10) - 1/10
    0.9
    """
    d = _check_dim(d)
    return _mean_resultant_length(d, _checked_kappa(kappa))


@_compiled("d")
def _mean_resultant_length(d, k):
    v = 0.5 * d - 1.0

    def series(k):
        # small kappa: A = (kappa / 2) / (v + 1) * 0F1(; v + 2; z) / 0F1(; v + 1; z)
        z = _series_argument(k)
        return (0.5 * k / (v + 1.0)) * (1.0 + _hyp0f1_tail(v + 2.0, z)) / (
            1.0 + _hyp0f1_tail(v + 1.0, z)
        )

    return _by_size(k, series, lambda k: _bessel.bessel_iv_ratio(v, k))


_SERIES_TERMS = 40
_SERIES_LIMIT = 2.0  # the power series below kappa = 2 (kappa^2 / 4 < 1)


def _by_size(k, series, direct):
    """series(k) where kappa < 2, else direct(k); each branch sees kappa clamped to
    its range, so the unused one stays finite (and so do its gradients). A scalar
    kappa (the layers') runs only the branch it needs (`ops.cond`): the branches are
    hundreds of scalar ops; a tensor of kappas gets both, selected element-wise."""
    small = k < _SERIES_LIMIT

    def run_series():
        return series(ops.minimum(k, _SERIES_LIMIT))

    def run_direct():
        return direct(ops.maximum(k, _SERIES_LIMIT))

    if len(k.shape) == 0:
        return ops.cond(small, run_series, run_direct)
    return ops.where(small, run_series(), run_direct())


def _series_argument(k):
    """z = kappa^2 / 4, clamped to 1 so an unused series branch stays finite."""
    return ops.minimum(ops.square(k) / 4.0, 1.0)


def _hyp0f1_tail(b, z):
    """0F1(; b; z) - 1 = sum_{n>=1} z^n / (n! (b)_n), for 0 <= z <= 1."""
    term = ops.ones_like(z)
    total = ops.zeros_like(z)
    for n in range(1, _SERIES_TERMS):
        term = term * z / (n * (b + n - 1.0))
        total = total + term
    return total


@keras_space_export("keras_space.ops.vmf_kl_to_uniform")
def vmf_kl_to_uniform(d, kappa):
    """KL(vMF(mu, kappa) || uniform on S^{d-1}) = kappa A_d + log C_d + log|S^{d-1}|.

    Positive, depending only on (d, kappa). For small kappa the sum cancels
    catastrophically, so there it is computed as
    kappa A_d(kappa) - log 0F1(; d/2; kappa^2 / 4) by its power series.
    Differentiable in kappa (float64 tensor).

    Example:

    >>> from keras_space.ops import vmf_kl_to_uniform
    >>> round(float(vmf_kl_to_uniform(16, 1e-2)), 10)  # ~ kappa^2 / (2 d)
    3.1e-06
    """
    d = _check_dim(d)
    return _kl_to_uniform(d, _checked_kappa(kappa))


@_compiled("d")
def _kl_to_uniform(d, k):
    v = 0.5 * d - 1.0

    def value(k):
        a = _mean_resultant_length(d, k)
        return _by_size(
            k,
            lambda k: k * a - ops.log1p(_hyp0f1_tail(v + 1.0, _series_argument(k))),
            lambda k: k * a + _log_normalizer(d, k) + _special.log_sphere_area(d),
        )

    def derivative(k):
        # dKL/dkappa = kappa A'(kappa), A' = 1 - A^2 - (d - 1) A / kappa: a
        # difference of O(1) terms, far more accurate than differentiating
        # through the Bessel functions.
        a = _mean_resultant_length(d, k)
        return k * (1.0 - a) * (1.0 + a) - (d - 1.0) * a

    return _with_derivative(value, derivative)(k)


def _unit_rows(inputs):
    """Unit vectors along the rows of `inputs`, in float64 for float64 inputs and float32
    otherwise (`VonMisesFisher.mean_direction` says how extreme and non-finite rows go)."""
    work = "float64" if keras.backend.standardize_dtype(inputs.dtype) == "float64" else "float32"
    x = ops.cast(inputs, work)
    squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
    tiny = np.finfo(work).tiny / np.finfo(work).eps  # below: digits lost to underflow
    plain = ops.logical_and(squared >= tiny, squared <= np.finfo(work).max)

    def direct():  # rows that are not plain divide by 1 here: finite gradients
        return x * ops.rsqrt(ops.where(plain, squared, ops.ones_like(squared)))

    def mixed():  # per row, so a row's result never depends on the others
        return ops.where(plain, direct(), _rescaled_direction(x))

    return ops.cond(ops.all(plain), direct, mixed)


def _checked_directions(name, rows):
    """The unit vectors along `rows` (wide dtype), refused if a row is zero or not finite."""
    rows = _as_f64(rows)
    finite = ops.all(ops.isfinite(rows), axis=-1)
    non_zero = ops.any(ops.not_equal(rows, 0.0), axis=-1)
    rows = validation.holds(name, rows, ops.logical_and(finite, non_zero), "finite non-zero rows")
    return _unit_rows(rows)


def _rescaled_direction(x):
    # x / |x| does not depend on the scale, so neither does its gradient: stopping it
    # keeps d(x / scale) / d scale = -x / scale^2, which underflows, out of the graph
    scale = ops.stop_gradient(ops.max(ops.abs(x), axis=-1, keepdims=True, initial=0.0))  # empty too
    zero = ops.equal(scale, 0.0)  # False for NaN: NaN propagates
    basis = ops.broadcast_to(ops.one_hot(0, x.shape[-1], dtype=x.dtype), ops.shape(x))
    # zero rows take e_1 before the norm: its gradient at 0 would be NaN
    x = ops.where(zero, basis, x / ops.where(zero, ops.ones_like(scale), scale))
    return x / safe.norm(x, axis=-1, keepdims=True)


# --- samplers of w ----------------------------------------------------------


@_compiled("d", "shape", "max_iterations")
def _wood_sample_w(d, kappa, shape, seed, max_iterations=100):
    """Wood's (1994) rejection sampler of w, vectorised and in-graph (float64).

    Every element draws proposals until one is accepted (a while loop that
    stops when all are); the acceptance rate is above 1/2 for every d and
    kappa. `kappa` broadcasts against `shape`; `seed` is a stateless seed
    (a pair of ints or a seed tensor). 1 - w is returned too, computed without
    cancellation (it is ~1/kappa small for large kappa). No gradient flows
    through the loop (the implicit one is attached by `_sample_w`).
    """
    dtype = _wide_dtype()
    k = ops.broadcast_to(ops.stop_gradient(_as_f64(kappa)), shape)
    dm1 = float(d - 1)
    root = ops.sqrt(4.0 * ops.square(k) + dm1**2)
    b = dm1 / (2.0 * k + root)  # = (-2 kappa + root) / (d - 1), stable
    x0 = (1.0 - b) / (1.0 + b)
    one_minus_x0 = 2.0 * b / (1.0 + b)
    c = k * x0 + dm1 * ops.log(one_minus_x0 * (1.0 + x0))
    seed = rnd.seed_tensor(seed)

    def body(i, w, one_minus_w, done):
        s1, s2, s3 = rnd.split(rnd.fold_in(seed, i), 3)
        g1 = rnd.gamma(shape, s1, 0.5 * dm1, dtype)
        g2 = rnd.gamma(shape, s2, 0.5 * dm1, dtype)
        e = g1 / (g1 + g2)
        u = rnd.uniform(shape, s3, dtype)
        denom = 1.0 - (1.0 - b) * e
        cand = (1.0 - (1.0 + b) * e) / denom
        cand_1mw = 2.0 * b * e / denom  # 1 - cand
        one_minus_x0w = one_minus_x0 + x0 * cand_1mw
        accept = k * cand + dm1 * ops.log(one_minus_x0w) - c >= ops.log(u)
        take = ops.logical_and(accept, ops.logical_not(done))
        return (
            i + 1,
            ops.where(take, cand, w),
            ops.where(take, cand_1mw, one_minus_w),
            ops.logical_or(done, accept),
        )

    def cond(i, w, one_minus_w, done):
        return ops.logical_and(i < max_iterations, ops.logical_not(ops.all(done)))

    init = (
        ops.convert_to_tensor(0, "int32"),
        ops.ones(shape, dtype),
        ops.zeros(shape, dtype),
        ops.zeros(shape, "bool"),
    )
    _, w, one_minus_w, _ = ops.while_loop(cond, body, init)
    return w, one_minus_w


def _closed_form_w(kappa, u):
    """d = 3: w from uniform u by the exact inverse CDF (float64, no table, no loop).

    F(w) = (e^{kappa w} - e^{-kappa}) / (e^kappa - e^{-kappa}), so
    1 - w = -log(u + (1 - u) e^{-2 kappa}) / kappa. Evaluated in the form
    that keeps every digit: near the mode (where the log's argument is
    above 1/2) as -log1p(-(1 - u)(1 - e^{-2 kappa})) / kappa, which keeps
    1 - w ~ (1 - u) / kappa exact for u -> 1 and kappa -> 0; in the far tail
    by the log itself, which keeps u down to 1e-300 (there 1 - u rounds to
    1). Relative error of 1 - w below 1e-12 for kappa from 1e-3 to 1e5
    (tested against mpmath); u = 0 gives w = -1. Differentiable in kappa: at
    fixed u this is the exact reparameterisation gradient. Returns (w, 1 - w).
    """
    k = _as_f64(kappa)
    v = 1.0 - u
    p = v * -ops.expm1(-2.0 * k)  # 1 - (u + (1 - u) e^{-2 kappa})
    near = p <= 0.5
    t_near = -ops.log1p(-ops.minimum(p, 0.5)) / k
    tail = u + v * ops.exp(-2.0 * k)  # 0 only for u = 0 with e^{-2 kappa} underflowing
    t_tail = -ops.log(ops.where(tail > 0.0, tail, 1.0)) / k
    one_minus_w = ops.where(near, t_near, ops.where(tail > 0.0, ops.minimum(t_tail, 2.0), 2.0))
    return 1.0 - one_minus_w, one_minus_w


def _log_theta_density(theta, d, kappa):
    """log of exp(kappa cos theta) sin^{d-2} theta, up to a constant (numpy)."""
    if d == 2:
        return kappa * np.cos(theta)
    with np.errstate(divide="ignore"):
        return kappa * np.cos(theta) + (d - 2) * np.log(np.sin(theta))


def _inverse_cdf_table(d, kappa, size=4096, grid=1 << 16):
    """Quantiles of theta = arccos w at u = j / size, j = 0..size (numpy float64).

    The density in theta is integrated by the trapezoid rule on a grid of
    `grid` points over the range where it exceeds e^-60 of its maximum (found
    on a first grid over [0, pi]), then inverted at equally spaced
    probabilities. The table has size + 1 entries (33 KB for 4096) and a
    sampler interpolates linearly between them, matching the CDF exactly at
    every node.
    """
    d = _check_dim(d)
    validation.positive_values("kappa", kappa)
    lo, hi = 0.0, math.pi
    for _ in range(2):  # locate the mass, then refine on it
        theta = np.linspace(lo, hi, grid)
        logq = _log_theta_density(theta, d, kappa)
        keep = np.flatnonzero(logq > np.max(logq) - 60.0)
        step = theta[1] - theta[0]
        lo = max(0.0, theta[keep[0]] - step)
        hi = min(math.pi, theta[keep[-1]] + step)
    theta = np.linspace(lo, hi, grid)
    q = np.exp(_log_theta_density(theta, d, kappa) - np.max(_log_theta_density(theta, d, kappa)))
    q[~np.isfinite(q)] = 0.0
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (q[1:] + q[:-1]) * np.diff(theta))])
    cdf /= cdf[-1]
    u = np.linspace(0.0, 1.0, size + 1)
    # strictly increasing for interpolation: drop flat stretches
    keep = np.concatenate([[True], np.diff(cdf) > 0])
    return np.interp(u, cdf[keep], theta[keep])


@_compiled("shape")
def _table_sample_w(table, shape, seed):
    """w = cos(theta) with theta interpolated from an inverse-CDF table (float64)."""
    table = _as_f64(table)
    size = table.shape[0] - 1
    u = rnd.uniform(shape, rnd.seed_tensor(seed), _wide_dtype())
    pos = u * float(size)
    idx = ops.minimum(ops.cast(safe.floor(pos), "int32"), size - 1)
    frac = pos - ops.cast(idx, pos.dtype)
    left = ops.take(table, idx)
    right = ops.take(table, idx + 1)
    theta = left + frac * (right - left)
    w = safe.cos(theta)
    one_minus_w = 2.0 * ops.square(safe.sin(0.5 * theta))
    return w, one_minus_w


# --- implicit reparameterisation in kappa -----------------------------------

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(96)


@_compiled("d")
def _dw_dkappa(w, d, kappa):
    """dw/dkappa at fixed CDF value (implicit reparameterisation), float64.

    With F(w; kappa) the CDF of w, dw/dkappa = -(dF/dkappa) / p(w). In the
    angle (theta_w = arccos w, q(phi) = exp(kappa cos phi) sin^{d-2} phi) this
    is

        sin(theta_w) * integral_0^theta_w (cos phi - A_d) q(phi) / q(theta_w) dphi
      = -sin(theta_w) * integral_theta_w^pi (same),

    because E[cos phi - A_d] = 0. The side away from the mode is integrated
    (there q(phi) / q(theta_w) <= 1) by 96-point Gauss-Legendre after the
    substitution s = -log(1 - v (1 - e^{-rate L})) / rate, which places the
    nodes on the scale where the integrand decays (rate from the slope and
    curvature of log q at theta_w).
    """
    w = _as_f64(w)
    k = ops.broadcast_to(_as_f64(kappa), ops.shape(w))
    dm2 = float(d - 2)
    a = _mean_resultant_length(d, k)
    theta = safe.arccos(ops.clip(w, -1.0, 1.0))
    sin_t = safe.sin(theta)
    # mode of q: cos(theta*) solves kappa (1 - c^2) = (d - 2) c
    c_mode = (-dm2 + ops.sqrt(dm2**2 + 4.0 * ops.square(k))) / (2.0 * k)
    theta_mode = safe.arccos(ops.clip(c_mode, -1.0, 1.0))
    below = theta <= theta_mode  # integrate over [0, theta] (towards smaller phi)
    length = ops.where(below, theta, math.pi - theta)
    slope = ops.abs(-k * sin_t + dm2 * safe.cos(theta) / ops.maximum(sin_t, 1e-300))
    curvature = k * safe.cos(theta) + dm2 / ops.maximum(ops.square(sin_t), 1e-300)
    rate = ops.maximum(slope, ops.sqrt(ops.maximum(curvature, 1e-12)))
    rate = ops.maximum(rate, 1e-3 / ops.maximum(length, 1e-300))
    span = -ops.expm1(-rate * length)  # 1 - e^{-rate L}
    v = ops.convert_to_tensor(0.5 * (_GL_NODES + 1.0), w.dtype)
    gw = ops.convert_to_tensor(0.5 * _GL_WEIGHTS, w.dtype)
    ex = lambda t: ops.expand_dims(t, -1)  # noqa: E731
    s = -ops.log1p(-ex(span) * v) / ex(rate)
    ds = ex(span / rate) / (1.0 - ex(span) * v)
    phi = ops.where(ex(below), ex(theta) - s, ex(theta) + s)
    phi = ops.clip(phi, 0.0, math.pi)
    log_ratio = ex(k) * (safe.cos(phi) - ex(safe.cos(theta)))
    if d > 2:
        log_ratio += dm2 * (
            ops.log(ops.maximum(safe.sin(phi), 1e-300)) - ex(ops.log(ops.maximum(sin_t, 1e-300)))
        )
    integrand = (safe.cos(phi) - ex(a)) * ops.exp(ops.minimum(log_ratio, 0.0)) * ds
    integral = ops.sum(integrand * gw, axis=-1)
    return ops.where(below, sin_t, -sin_t) * integral


def _sample_w(d, kappa, shape, seed, sampler=None, table=None, reparameterize_kappa=False):
    """(w, 1 - w) by `sampler`: "closed_form" (d = 3), "table" (`table`, fixed
    kappa) or "wood"; None picks "table" when a table is given, else
    "closed_form" for d = 3, else "wood". With `reparameterize_kappa`, w
    carries the gradient in kappa (explicit for the closed form, implicit
    otherwise)."""
    if sampler is None:
        sampler = "table" if table is not None else ("closed_form" if d == 3 else "wood")
    if sampler == "closed_form":
        u = rnd.uniform(shape, rnd.seed_tensor(seed), _wide_dtype())
        w, one_minus_w = _closed_form_w(kappa, u)
        if reparameterize_kappa:
            return w, one_minus_w
        return ops.stop_gradient(w), ops.stop_gradient(one_minus_w)
    if sampler == "table":
        w, one_minus_w = _table_sample_w(table, shape, seed)
    else:
        w, one_minus_w = _wood_sample_w(d, kappa, shape, seed)
    w = ops.stop_gradient(w)
    one_minus_w = ops.stop_gradient(one_minus_w)
    if not reparameterize_kappa:
        return w, one_minus_w
    k = ops.broadcast_to(_as_f64(kappa), ops.shape(w))
    w_rep = _pathwise(w, k, lambda w, k: _dw_dkappa(w, d, k))
    # 1 - w moves by -dw: same gradient path, no cancellation in the value.
    one_minus_w_rep = one_minus_w - (w_rep - ops.stop_gradient(w_rep))
    return w_rep, one_minus_w_rep


def _pathwise(value, param, derivative):
    """`value` (a draw, no gradient of its own) with gradient `derivative(value, param)`
    in `param` (same shape): an implicit reparameterisation gradient attached. (The
    value goes in as an argument: a closed-over tracer leaks out of JAX's jit.)"""

    @ops.custom_gradient
    def attach(value_in, param_in):
        def grad(*args, upstream=None):  # the derivative only when a gradient is asked for
            if upstream is None:
                (upstream,) = args
            return ops.zeros_like(value_in), upstream * derivative(value_in, param_in)

        return value_in + ops.zeros_like(param_in), grad

    return attach(ops.stop_gradient(value), param)


def _sample_on_sphere(mu, w, one_minus_w, noise):
    """z = w mu + sqrt(1 - w^2) nu, nu = the unit part of `noise` orthogonal to mu.

    mu: unit vectors (..., d); w, one_minus_w: (...); noise: N(0, I) (..., d).
    Differentiable in mu (and in w). Written as z = a mu + b noise with
    per-row scalars, b = sqrt(1 - w^2) / |noise - <noise, mu> mu| and
    a = w - b <noise, mu>, the norm from |noise|^2 - <noise, mu>^2: two
    row reductions and one pass to build z (the noise is the floor: drawing
    it costs about as much as the rest). That difference loses digits only
    when the noise is nearly along mu, P(angle < s) ~ s^(d-1): callers use
    float64 for d = 2 and 4 (the layer does), and for d >= 5 at 1e9 samples the
    smallest angle is ~1e-2, a relative error ~1e-3 float32 eps. d = 3 has
    its own route, `_sample_on_sphere_3d`, exact in float32.
    """
    dot = ops.sum(noise * mu, axis=-1, keepdims=True)
    orth_sq = ops.sum(ops.square(noise), axis=-1, keepdims=True) - ops.square(dot)
    b = ops.expand_dims(_sine(one_minus_w), -1) * ops.rsqrt(ops.maximum(orth_sq, 1e-30))
    return (ops.expand_dims(w, -1) - b * dot) * mu + b * noise


def _sine(one_minus_w):
    """sqrt(1 - w^2) from 1 - w, without the cancellation of 1 - w^2."""
    return ops.sqrt(ops.maximum(one_minus_w * (2.0 - one_minus_w), 0.0))


def _sample_on_sphere_3d(mu, w, one_minus_w, angle):
    """d = 3: z = w mu + sqrt(1 - w^2) (cos(angle) b1 + sin(angle) b2).

    mu: unit vectors (..., 3); w, one_minus_w, angle: (...), the angle
    uniform on [0, 2 pi). (b1, b2, mu) is the orthonormal basis of Duff et
    al., "Building an orthonormal basis, revisited" (JCGT 2017): with
    s = sign(mu_z) and a = -1 / (s + mu_z), b1 = (1 + s a mu_x^2, s a mu_x mu_y,
    -s mu_x), b2 = (a mu_x mu_y, s + a mu_y^2, -mu_y). |s + mu_z| >= 1, so
    nothing cancels: |z| - 1 and <z, mu> - w stay at rounding level in
    float32, where projecting normal noise off mu (`_sample_on_sphere`) needs
    float64 at d = 3. No noise vector either: one uniform angle per sample.
    Differentiable in mu; the basis turns over where mu_z changes sign, which
    moves the sample of a fixed angle but not its distribution (uniform
    around mu), so pathwise gradients stay unbiased.
    """
    x, y, z = mu[..., 0], mu[..., 1], mu[..., 2]
    s = ops.where(z >= 0.0, ops.ones_like(z), -ops.ones_like(z))
    a = -1.0 / (s + z)
    xya = x * y * a
    r = _sine(one_minus_w)
    c, t = r * safe.cos(angle), r * safe.sin(angle)
    return ops.stack(
        [
            w * x + c * (1.0 + s * a * x * x) + t * xya,
            w * y + c * (s * xya) + t * (s + a * y * y),
            w * z - c * (s * x) - t * y,
        ],
        axis=-1,
    )
