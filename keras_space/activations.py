"""Smooth activations by convolution with an approximate identity.

A non-smooth function f becomes smooth as

    g(x) = (f * phi_sigma)(x) = integral f(y) phi_sigma(x - y) dy = E[f(x + sigma Z)],

where phi_sigma(z) = phi(z / sigma) / sigma and Z has the standard kernel
density phi: "gaussian" (standard normal), "logistic" (standard logistic,
phi = sigmoid'), or "cauchy" (standard Cauchy). As sigma -> 0, g -> f.

Closed forms (F is the kernel's CDF):

- step:  F(x / sigma)
- sign:  2 F(x / sigma) - 1
- relu:  gaussian x Phi(x/sigma) + sigma phi(x/sigma); logistic sigma softplus(x/sigma)
- leaky_relu (SAU): alpha x + (1 - alpha) smooth_relu(x)
- abs:   2 smooth_relu(x) - x
- max(a, b) = b + smooth_relu(a - b)
- floor: floor(x) + sum over nearby integers k of [F((x - k)/sigma) - step(x - k)]
  for sigma < 1/2, and by its Fourier series
  x - 1/2 + sum_n c_n sin(2 pi n x) / (pi n), c_n the kernel's characteristic
  function at 2 pi n, for sigma >= 1/2 (both exact to float64 rounding).

The Cauchy kernel has no mean, so it smooths only bounded functions (step,
sign); asking for it with relu, leaky_relu, abs, max or floor raises.

With the Gaussian kernel, smoothing only the step in x * step(x) gives GELU
(x * smooth_step(x, 1)), with the logistic kernel Swish/SiLU.

Everything is written with `keras.ops`, computed in float32 (or float64 for
float64 inputs) and cast back, so float16/bfloat16 inputs up to |x| = 1e4 are
safe.

Reference: "SAU: Smooth activation function using convolution with
approximate identities", https://arxiv.org/abs/2109.13210
"""

import math

import keras
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import _dtype_safe as safe
from keras_space.utils import validation

KERNELS = ("gaussian", "logistic", "cauchy")
# Kernels with a mean: the only ones that can smooth unbounded functions.
MEAN_KERNELS = ("gaussian", "logistic")
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# floor: number of nearby integers (direct sum) and of Fourier terms.
_FLOOR_SWITCH = 0.5
_FLOOR_TERMS = 20
_FLOOR_MODES = 8

# The widths the closed forms and their gradients are finite and accurate for, in
# float32 and float64 (x / sigma, log sigma): outside, results overflow or lose all digits.
SIGMA_RANGE = (1e-6, 1e6)


def _validate_kernel(kernel, allowed=KERNELS, fn_name=None):
    validation.choice("kernel", kernel, KERNELS)
    if kernel not in allowed:
        raise ValueError(
            f"`kernel`={kernel!r} cannot smooth {fn_name}: the Cauchy kernel has "
            "no mean, so its convolution with an unbounded function diverges. "
            f"Use one of {allowed}. Received: kernel={kernel!r}"
        )


def _prepare(x, *params):
    """Cast x and parameters to the working dtype; returns (out_dtype, x, *params)."""
    x = ops.convert_to_tensor(x)
    out_dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in out_dtype:
        out_dtype = keras.config.floatx()
    work = "float64" if out_dtype == "float64" else "float32"
    # Python numbers straight to the working dtype: through float32 first, a float64
    # call would lose sigma's digits (0.001 becomes 0.0010000000475).
    params = tuple(
        ops.cast(p, work) if hasattr(p, "dtype") else ops.convert_to_tensor(np.asarray(p, work))
        for p in params
    )
    return (out_dtype, ops.cast(x, work)) + params


def _erf(z):
    """erf, saturated: TensorFlow's float64 erf returns NaN for |z| > ~1.3e154, and
    erf(+-8) is already +-1 to the last bit in float64."""
    return ops.erf(ops.clip(z, -8.0, 8.0))


def _erfc(z):
    """erfc, saturated like `_erf` (erfc(-27) = 2 and erfc(27) = 1e-319 in float64)."""
    return ops.erfc(ops.clip(z, -27.0, 27.0))


def _kernel_cdf(z, kernel):
    """CDF of the standard kernel at z."""
    if kernel == "gaussian":
        # erfc, not 1 + erf: for z < 0, 1 + erf cancels (at z = -8 the ReLU's tail was
        # 120 % off); erfc keeps full relative precision there.
        return 0.5 * _erfc(-z / _SQRT2)
    if kernel == "logistic":
        return ops.sigmoid(z)
    return 0.5 + safe.arctan(z) / math.pi


def _kernel_pdf(z, kernel):
    """Density of the standard kernel at z."""
    if kernel == "gaussian":
        return _INV_SQRT_2PI * ops.exp(-0.5 * ops.square(z))
    if kernel == "logistic":
        s = ops.sigmoid(z)
        return s * (1.0 - s)
    return 1.0 / (math.pi * (1.0 + ops.square(z)))


def _kernel_partial_mean(z, kernel):
    """G(z) with G' = z phi(z): the kernel's first moment from -inf to z, up to
    a constant (gaussian, logistic) or its principal value (cauchy)."""
    if kernel == "gaussian":
        return -_INV_SQRT_2PI * ops.exp(-0.5 * ops.square(z))
    if kernel == "logistic":
        return z * ops.sigmoid(z) - ops.softplus(z)
    return ops.log1p(ops.square(z)) / (2.0 * math.pi)


def _finite(x):
    """x with +-inf replaced by 0: the smooth formula's input (the limits are put back
    with `_at_infinity`, so neither the value nor the gradient sees inf * 0)."""
    return ops.where(ops.isinf(x), ops.zeros_like(x), x)


def _at_infinity(x, y, limit):
    """y, with the exact limit of the smoothed function where x is +-inf.

    Convolving with a kernel of mean 0 leaves the limits at +-inf of relu, abs, max
    and leaky ReLU unchanged (inf, 0, ...), so those are the correct values there.
    """
    return ops.where(ops.isinf(x), limit, y)


def _relu_core(x, sigma, kernel):
    u = x / sigma
    if kernel == "gaussian":
        return x * _kernel_cdf(u, kernel) + sigma * _kernel_pdf(u, kernel)
    return sigma * ops.softplus(u)


def _relu_sigma_derivative(u, kernel):
    """d/dsigma of sigma-smoothed relu at u = x / sigma: phi(u) for the gaussian
    (the x- and u-terms cancel); softplus(u) - u sigmoid(u) = softplus(-|u|) +
    |u| sigmoid(-|u|) for the logistic, with |u| capped where both terms are 0."""
    if kernel == "gaussian":
        return _kernel_pdf(u, kernel)
    a = ops.minimum(ops.abs(u), 800.0)
    return ops.softplus(-a) + a * ops.sigmoid(-a)


def _sum_to(g, like):
    """g summed over the axes `like` was broadcast along (a scalar or per-channel
    sigma or alpha gets the sum of its elementwise gradients)."""
    shape = tuple(like.shape)
    extra = len(g.shape) - len(shape)
    if extra:
        g = ops.sum(g, axis=tuple(range(extra)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return ops.sum(g, axis=axes, keepdims=True) if axes else g


def _scaled(b, r):
    """b r, skipping the multiplication by a Python 1."""
    return r if isinstance(b, (int, float)) and b == 1 else b * r


def _affine(a, x, b, r):
    """a x + b r, skipping the operations with Python 0 and 1."""
    return _scaled(b, r) if isinstance(a, (int, float)) and a == 0 else a * x + _scaled(b, r)


def _relu_mix_parts(x, sigma, kernel, a, b):
    """(y, dy/dx, phi term) of y = a x + b relu_s(x), in as few elementwise ops as
    the forward + backward budget allows (GELU's). Gaussian, with
    z = -x / (sqrt(2) sigma) and e = erfc(z) = 2 F(x / sigma):
    dy/dx = a + (b / 2) e and y = x dy/dx + b sigma phi(x / sigma), where
    sigma phi(x / sigma) = sigma exp(-z^2) / sqrt(2 pi) is returned as the
    third part (d y / d sigma = b phi). Logistic: the formulas of `_relu_core`."""
    if kernel == "gaussian":
        z = x * (-1.0 / (_SQRT2 * sigma))
        slope = _affine(a, 1.0, _scaled(b, 0.5), ops.erfc(z))
        density = ops.exp(-ops.square(z)) * _INV_SQRT_2PI
        return slope, density
    u = x / sigma
    return _affine(a, 1.0, b, ops.sigmoid(u)), None


# Below u = -3 the float64 Gaussian ReLU is evaluated without cancellation:
# u Phi(u) + phi(u) = phi(u) c / (t + c), t = -u, c = 1 / (t + 2 / (t + 3 / (t + ...)))
# (Laplace's continued fraction of the Mills ratio; 60 terms reach float64 rounding
# at t = 3, fewer beyond).
_RELU_TAIL = 3.0
_RELU_TAIL_TERMS = 60


def _gaussian_relu_tail(u):
    """(u Phi(u) + phi(u)) / phi(u) for u <= -3, cancellation-free (float64)."""
    t = ops.maximum(-u, _RELU_TAIL)
    d = t
    for k in range(_RELU_TAIL_TERMS, 1, -1):
        d = t + k / d
    c = 1.0 / d
    return c / (t + c)


def _relu_mix(x, sigma, kernel, limit, slope=0, scale=1, alpha=None):
    """slope x + scale relu_s(x) (relu: 0, 1; abs: -1, 2), or with `alpha` the
    SAU alpha x + (1 - alpha) relu_s(x), with closed-form gradients.

    d/dx = slope + scale F(x / sigma) (the smoothed step), d/dsigma = scale times
    `_relu_sigma_derivative`, d/dalpha = x - relu_s(x). The backward pass
    recomputes them from the inputs (under `tf.function` the shared ops are
    computed once), so it is itself differentiable: second and mixed
    derivatives (scale phi(x/sigma) / sigma, ...) come out exact. At
    x = +-inf the value is `limit(x, slope)` and the gradients are the limits
    (F = 0 or 1; the sigma and alpha terms 0). Autodiff through the formula
    took 1.6-2.2x GELU's forward + backward time.
    """

    def coefficients(alpha):
        return (alpha[0], 1.0 - alpha[0]) if alpha else (slope, scale)

    @ops.custom_gradient
    def forward(x, sigma, *alpha):
        a, b = coefficients(alpha)
        dydx, density = _relu_mix_parts(x, sigma, kernel, a, b)
        if density is None:  # logistic
            y = _at_infinity(x, _affine(a, _finite(x), b, _relu_core(_finite(x), sigma, kernel)), limit(x, a))
        else:
            # y = x dy/dx + b sigma phi: exact at +-inf (erfc and exp saturate) except
            # 0 * -inf where dy/dx -> 0 there (relu; SAU with alpha = 0)
            xd = (ops.maximum(x, -1e30) if not alpha and slope == 0 else x) * dydx
            y = xd + _scaled(b, sigma * density)
            if not alpha and slope == 0 and keras.backend.standardize_dtype(x.dtype) == "float64":
                u = x / sigma  # relu's tail, where x dy/dx and sigma phi cancel
                tail = _scaled(b, sigma * density * _gaussian_relu_tail(u))
                y = ops.where(u <= -_RELU_TAIL, tail, y)
            if alpha:
                y = _at_infinity(x, y, limit(x, a))

        def grad(*args, upstream=None):
            g = args[0] if upstream is None else upstream
            a, b = coefficients(alpha)
            dydx, density = _relu_mix_parts(x, sigma, kernel, a, b)
            if density is None:
                density = _relu_sigma_derivative(x / sigma, kernel)
            grads = (g * dydx, _sum_to(g * _scaled(b, density), sigma))
            if alpha:
                xs = _finite(x)
                dalpha = _at_infinity(x, xs - _relu_core(xs, sigma, kernel), ops.zeros_like(x))
                grads += (_sum_to(g * dalpha, alpha[0]),)
            return grads

        return y, grad

    return forward(x, sigma) if alpha is None else forward(x, sigma, alpha)


@keras_space_export("keras_space.activations.smooth_step")
def smooth_step(x, sigma=1.0, kernel="gaussian"):
    """Heaviside step convolved with the kernel: F(x / sigma).

    Args:
        x: input tensor.
        sigma: positive width of the kernel (scalar or broadcastable tensor).
            Defaults to `1.0`.
        kernel: "gaussian", "logistic" or "cauchy". Defaults to `"gaussian"`.

    Example:

    >>> from keras_space.activations import smooth_step
    >>> y = smooth_step([-1.0, 0.0, 1.0], sigma=0.5)
    """
    _validate_kernel(kernel)
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma = _prepare(x, sigma)
    return ops.cast(_kernel_cdf(x / sigma, kernel), dtype)


@keras_space_export("keras_space.activations.smooth_sign")
def smooth_sign(x, sigma=1.0, kernel="gaussian"):
    """sign(x) convolved with the kernel: 2 F(x / sigma) - 1.

    Gaussian: erf(x / (sqrt(2) sigma)); logistic: tanh(x / (2 sigma));
    Cauchy: (2 / pi) arctan(x / sigma).

    Example:

    >>> from keras_space.activations import smooth_sign
    >>> y = smooth_sign([-1.0, 0.0, 1.0], sigma=0.1, kernel="logistic")
    """
    _validate_kernel(kernel)
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma = _prepare(x, sigma)
    u = x / sigma
    if kernel == "gaussian":
        y = _erf(u / _SQRT2)
    elif kernel == "logistic":
        y = safe.tanh(0.5 * u)
    else:
        y = (2.0 / math.pi) * safe.arctan(u)
    return ops.cast(y, dtype)


@keras_space_export("keras_space.activations.smooth_relu")
def smooth_relu(x, sigma=1.0, kernel="gaussian"):
    """ReLU convolved with the kernel.

    Gaussian: x Phi(x/sigma) + sigma phi(x/sigma)
    (= 1/2 [x + x erf(x / (sqrt(2) sigma)) + sqrt(2/pi) sigma exp(-x^2 / 2 sigma^2)]);
    logistic: sigma softplus(x / sigma). In float64 the Gaussian tail
    u = x / sigma <= -3, where the two terms cancel, is sigma phi(u) times a
    continued fraction: within (3 u^2 + 20) ulps (the u^2 from rounding u).

    Example:

    >>> from keras_space.activations import smooth_relu
    >>> y = smooth_relu([-1.0, 0.0, 1.0], sigma=0.1)
    """
    _validate_kernel(kernel, allowed=MEAN_KERNELS, fn_name="relu")
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma = _prepare(x, sigma)
    return ops.cast(_relu_mix(x, sigma, kernel, lambda x, _: ops.relu(x)), dtype)


@keras_space_export("keras_space.activations.smooth_leaky_relu")
def smooth_leaky_relu(x, alpha=0.01, sigma=1.0, kernel="gaussian"):
    """Leaky ReLU max(x, alpha x) convolved with the kernel (SAU):
    alpha x + (1 - alpha) smooth_relu(x).

    Example:

    >>> from keras_space.activations import smooth_leaky_relu
    >>> y = smooth_leaky_relu([-1.0, 0.0, 1.0], alpha=0.1, sigma=0.1)
    """
    _validate_kernel(kernel, allowed=MEAN_KERNELS, fn_name="leaky_relu")
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma, alpha = _prepare(x, sigma, alpha)

    def limit(x, alpha):
        minus_infinity = ops.where(alpha > 0, ops.cast(-np.inf, x.dtype), ops.zeros_like(alpha))
        return ops.where(x > 0, x, minus_infinity)

    return ops.cast(_relu_mix(x, sigma, kernel, limit, alpha=alpha), dtype)


@keras_space_export("keras_space.activations.smooth_abs")
def smooth_abs(x, sigma=1.0, kernel="gaussian"):
    """|x| convolved with the kernel: 2 smooth_relu(x) - x.

    Example:

    >>> from keras_space.activations import smooth_abs
    >>> y = smooth_abs([-1.0, 0.0, 1.0], sigma=0.1)
    """
    _validate_kernel(kernel, allowed=MEAN_KERNELS, fn_name="abs")
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma = _prepare(x, sigma)
    return ops.cast(_relu_mix(x, sigma, kernel, lambda x, _: ops.abs(x), -1, 2), dtype)


@keras_space_export("keras_space.activations.smooth_max")
def smooth_max(a, b, sigma=1.0, kernel="gaussian"):
    """max(a, b) = b + relu(a - b), with the ReLU smoothed.

    Symmetric in a and b for these symmetric kernels.

    Example:

    >>> from keras_space.activations import smooth_max
    >>> y = smooth_max([0.0, 2.0], [1.0, 1.0], sigma=0.1)
    """
    _validate_kernel(kernel, allowed=MEAN_KERNELS, fn_name="max")
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, a, b, sigma = _prepare(a, b, sigma)
    infinite = ops.logical_or(ops.isinf(a), ops.isinf(b))
    a_safe, b_safe = (ops.where(infinite, ops.zeros_like(t), t) for t in (a, b))
    y = b_safe + _relu_core(a_safe - b_safe, sigma, kernel)
    return ops.cast(ops.where(infinite, ops.maximum(a, b), y), dtype)


def _floor_char(n, sigma, kernel):
    """The kernel's characteristic function at t = 2 pi n (scale sigma)."""
    if kernel == "gaussian":
        return ops.exp(-2.0 * math.pi**2 * n**2 * ops.square(sigma))
    a = 2.0 * math.pi**2 * n * sigma  # logistic: a / sinh(a), stable for a >= 1
    return 2.0 * a * ops.exp(-a) / (1.0 - ops.exp(-2.0 * a))


@keras_space_export("keras_space.activations.smooth_floor")
def smooth_floor(x, sigma=0.1, kernel="gaussian"):
    """floor(x) convolved with the kernel (floor as a sum of smoothed steps).

    For sigma < 1/2 the 2 x 20 nearest smoothed steps are summed; for
    sigma >= 1/2 the Fourier series x - 1/2 + sum_n c_n sin(2 pi n x) / (pi n)
    with the kernel's characteristic function c_n (8 terms). Both are exact to
    float64 rounding on their side of the switch. Only the gaussian and
    logistic kernels: with the Cauchy kernel the integral diverges. Exact
    limits at +-inf (+-inf; NaN stays NaN).

    Example:

    >>> from keras_space.activations import smooth_floor
    >>> y = smooth_floor([0.5, 1.0, 1.5], sigma=0.1)
    """
    _validate_kernel(kernel, allowed=MEAN_KERNELS, fn_name="floor")
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    dtype, x, sigma = _prepare(x, sigma)
    infinite = ops.isinf(x)  # floor's limits: +-inf (u = inf - inf would be NaN)
    finite_x = ops.where(infinite, ops.zeros_like(x), x)
    m = safe.floor(finite_x)
    u = finite_x - m  # in [0, 1): keeps sin() and the steps precise for large |x|
    # One trailing axis over the terms: a compact graph, whatever the number of terms.
    u_, sigma_ = ops.expand_dims(u, -1), ops.expand_dims(sigma, -1)
    # Direct sum of smoothed steps at the nearby integers (sigma < 1/2): the steps at
    # j = 1..20 minus those at -j + 1 = 0..-19.
    j = ops.convert_to_tensor(np.arange(1, _FLOOR_TERMS + 1), x.dtype)
    s_small = ops.minimum(sigma_, _FLOOR_SWITCH)
    steps = _kernel_cdf((u_ - j) / s_small, kernel) - _kernel_cdf((1.0 - j - u_) / s_small, kernel)
    direct = m + ops.sum(steps, axis=-1)
    # Fourier series (sigma >= 1/2).
    n = ops.convert_to_tensor(np.arange(1, _FLOOR_MODES + 1), x.dtype)
    s_large = ops.maximum(sigma_, _FLOOR_SWITCH)
    modes = _floor_char(n, s_large, kernel) * safe.sin(2.0 * math.pi * n * u_) / (math.pi * n)
    fourier = m + u - 0.5 + ops.sum(modes, axis=-1)
    y = ops.where(sigma < _FLOOR_SWITCH, direct, fourier)
    return ops.cast(ops.where(infinite, x, y), dtype)


CLOSED_FORMS = {
    "relu": smooth_relu,
    "leaky_relu": smooth_leaky_relu,
    "abs": smooth_abs,
    "sign": smooth_sign,
    "step": smooth_step,
    "floor": smooth_floor,
}

# Half-width of the lattice window, in units of sigma, for mollify's "lattice"
# rule: the kernel mass outside is below 1e-15.
_WINDOW = {"gaussian": 8.5, "logistic": 36.0}


def _validate_fn(fn):
    """fn must be a callable that keras.ops can trace symbolically."""
    if not callable(fn):
        raise ValueError(
            f"`fn` must be a callable written with keras.ops. Received: fn={fn!r}"
        )
    probe = keras.KerasTensor((3,), dtype="float32")
    try:
        out = fn(probe)
    except Exception as e:  # noqa: BLE001 - report any failure as bad input
        raise ValueError(
            "`fn` must be an elementwise callable written with keras.ops "
            f"(calling it on a symbolic float32 tensor raised {type(e).__name__}: "
            f"{e}). Received: fn={fn!r}"
        ) from e
    if not isinstance(out, keras.KerasTensor) or tuple(out.shape) != (3,):
        raise ValueError(
            "`fn` must be an elementwise callable written with keras.ops that "
            "returns a tensor of its input's shape (got "
            f"{type(out).__name__} for a (3,) input). Received: fn={fn!r}"
        )


def _lattice_rule(fn, x, sigma, kernel, num_cells):
    """Piecewise-linear product integration on a dyadic lattice.

    The real line around x is cut into `num_cells` cells [b_j, b_j + h] whose
    ends lie on the lattice h Z, h a power of two; on each cell f is replaced
    by the line through its values at the two Gauss-Legendre points of the
    cell, and the kernel's mass and first moment over the cell are integrated
    exactly. Exact for piecewise-linear f whose kinks and jumps lie on the
    lattice (relu, abs, step, sign, floor, clip at integers ...); O(h^2) on
    smooth stretches; O(h / sigma) times the jump at other jumps.
    """
    width = _WINDOW[kernel]
    ext = ops.expand_dims
    x = ext(x, -1)
    sigma = ext(sigma, -1)
    # h = 2^ceil(log2(2 * width * sigma / num_cells)): the window covers +-width sigma.
    h = ops.power(
        2.0, ops.ceil(ops.log2(2.0 * width * sigma / float(num_cells)))
    )
    r = x - h * safe.floor(x / h)  # x mod h, in [0, h)
    j = ops.cast(ops.arange(num_cells), x.dtype)
    # Cell left ends relative to x: multiples of h shifted so b_j + x is on the lattice.
    left = h * (j - num_cells // 2) - r
    right = left + h
    centre = left + 0.5 * h
    # Two Gauss-Legendre points per cell determine the line.
    g = h / (2.0 * math.sqrt(3.0))
    f_lo = fn(x + centre - g)
    f_hi = fn(x + centre + g)
    f_mid = 0.5 * (f_lo + f_hi)
    slope = (f_hi - f_lo) / (2.0 * g)
    zl, zr = left / sigma, right / sigma
    mass = _kernel_cdf(zr, kernel) - _kernel_cdf(zl, kernel)
    # integral over the cell of (y - centre) phi_sigma(y) dy
    moment = sigma * (
        _kernel_partial_mean(zr, kernel) - _kernel_partial_mean(zl, kernel)
    ) - centre * mass
    return ops.sum(f_mid * mass + slope * moment, axis=-1)


def _gauss_rule(fn, x, sigma, kernel, num_points):
    """Gauss-Hermite (gaussian) or Gauss-Legendre in CDF space (others)."""
    if kernel == "gaussian":
        t, w = np.polynomial.hermite.hermgauss(num_points)
        z = math.sqrt(2.0) * t
        w = w / math.sqrt(math.pi)
    else:
        t, w = np.polynomial.legendre.leggauss(num_points)
        p = 0.5 * (t + 1.0)
        w = 0.5 * w
        if kernel == "logistic":
            z = np.log(p) - np.log1p(-p)
        else:
            z = np.tan(math.pi * (p - 0.5))
    z = ops.cast(z, x.dtype)
    w = ops.cast(w, x.dtype)
    y = fn(ops.expand_dims(x, -1) + ops.expand_dims(sigma, -1) * z)
    return ops.sum(y * w, axis=-1)


@keras_space_export("keras_space.activations.mollify")
def mollify(fn, x, sigma=1.0, kernel="gaussian", num_points=256, rule="auto"):
    """Smooth any elementwise function by convolution with a kernel.

    Computes g(x) = E[fn(x + sigma Z)], Z from the standard kernel, by
    quadrature:

    - `rule="lattice"` (default for gaussian and logistic): piecewise-linear
      product integration on a dyadic lattice of `num_points` cells covering
      the kernel's support (kernel mass and first moment integrated exactly
      per cell). Exact for piecewise-linear functions whose kinks and jumps
      sit on dyadic rationals (relu, abs, step, sign, floor, ...), O(h^2)
      elsewhere; robust for discontinuous functions. Evaluates fn at
      2 * num_points points per element.
    - `rule="gauss"` (default for cauchy): Gauss-Hermite for the gaussian
      kernel; Gauss-Legendre in the kernel's CDF variable for logistic and
      cauchy. Spectrally accurate for smooth fn with few points, poor for
      jumps (O(1 / num_points)). The Cauchy kernel has no mean: use it only
      with bounded fn.

    Memory is x.size * num_points (times two for the lattice rule).

    Args:
        fn: elementwise callable written with keras.ops.
        x: input tensor.
        sigma: positive kernel width (scalar or broadcastable to x). Defaults to `1.0`.
        kernel: "gaussian", "logistic" or "cauchy". Defaults to `"gaussian"`.
        num_points: cells (lattice) or nodes (gauss). Defaults to `256`.
        rule: "auto", "lattice" or "gauss". Defaults to `"auto"`.

    Example:

    >>> import keras
    >>> from keras_space.activations import mollify
    >>> y = mollify(keras.ops.floor, [0.3, 1.0, 2.7], sigma=0.2)
    """
    _validate_kernel(kernel)
    validation.positive_values("sigma", sigma, *SIGMA_RANGE)
    _validate_fn(fn)
    num_points = validation.positive_int("num_points", num_points, minimum=2)
    validation.choice("rule", rule, ("auto", "lattice", "gauss"))
    if rule == "auto":
        rule = "gauss" if kernel == "cauchy" else "lattice"
    if rule == "lattice" and kernel == "cauchy":
        raise ValueError(
            "The 'lattice' rule needs a kernel with light tails; use rule='gauss' "
            f"with the Cauchy kernel. Received: rule={rule!r}, kernel={kernel!r}"
        )
    dtype, x, sigma = _prepare(x, sigma)
    sigma = ops.broadcast_to(sigma, ops.shape(x))

    def wrapped(v):
        return ops.cast(fn(v), v.dtype)

    if rule == "lattice":
        y = _lattice_rule(wrapped, x, sigma, kernel, int(num_points))
    else:
        y = _gauss_rule(wrapped, x, sigma, kernel, int(num_points))
    return ops.cast(y, dtype)
