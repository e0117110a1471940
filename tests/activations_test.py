"""Smooth activations against scipy quadrature of the convolution integral."""

import math

import keras
import numpy as np
import pytest
from scipy import integrate, stats

from keras_space import activations as A
from keras_space.layers import SmoothActivation
from keras_space.ops import _dtype_safe as safe
from tests.backend import compiled, f64, grad, gradient_function, numpy, on_jax_too

pytestmark = [pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning"),
              pytest.mark.all_backends]

DIST = {"gaussian": stats.norm, "logistic": stats.logistic, "cauchy": stats.cauchy}
# the same densities as plain Python for quad's scalar integrand (scipy.stats' pdf costs
# ~30 us a call, most of these tests' time); test_quadrature_densities_are_scipys checks them
PDF = {
    "gaussian": lambda z: math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi),
    "logistic": lambda z: math.exp(-abs(z)) / (1.0 + math.exp(-abs(z))) ** 2,
    "cauchy": lambda z: 1.0 / (math.pi * (1.0 + z * z)),
}
XS = np.concatenate([np.linspace(-4.0, 4.0, 33) + 0.013, [-0.0, 0.0, 1.0, -2.0]])


def convolve(f, x, sigma, kernel, jumps=()):
    """E[f(x + sigma Z)] by scipy.quad over the whole line, split at jumps of f."""
    pdf = PDF[kernel]
    # cut at the jumps and around the kernel's peak so quad sees every piece
    near = {(j - x) / sigma for j in jumps if abs(j - x) / sigma < 40.0}
    cuts = sorted(near | {-30.0, -10.0, -3.0, 0.0, 3.0, 10.0, 30.0})
    edges = [-np.inf, *cuts, np.inf]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        val, _ = integrate.quad(
            lambda z: f(x + sigma * z) * pdf(z), lo, hi, limit=400,
            epsabs=1e-13, epsrel=1e-12,
        )
        total += val
    return total


def test_quadrature_densities_are_scipys():
    z = np.concatenate([np.linspace(-40.0, 40.0, 801), [0.0, 1e-300, 1e3, -1e150]])
    for kernel, dist in DIST.items():
        np.testing.assert_allclose([PDF[kernel](float(v)) for v in z], dist.pdf(z), rtol=1e-14, atol=0,
                                   err_msg=kernel)


def floor_reference(xs, sigma, kernel):
    """E[floor(x + sigma Z)] integrated exactly piece by piece with scipy's CDF:
    sum_n n P(n <= x + sigma Z < n + 1). (quad does the same integral one piece per
    integer, ~100x slower.) The tails beyond |n| = 100 are below 1e-30 here."""
    cdf = DIST[kernel].cdf
    n = np.arange(-100, 100)[:, None]
    xs = np.asarray(xs)[None, :]
    return np.sum(n * (cdf((n + 1 - xs) / sigma) - cdf((n - xs) / sigma)), axis=0)


def reference(f, xs, sigma, kernel, jumps=()):
    if f is math.floor:
        return floor_reference(xs, sigma, kernel)
    return np.array([convolve(f, x, sigma, kernel, jumps) for x in xs])


def step(y):
    return np.where(y > 0, 1.0, 0.0)


CASES = {
    # name: (our function, numpy f, jumps/kinks, kernels with a closed form)
    "relu": (A.smooth_relu, lambda y: max(y, 0.0), (0.0,), ("gaussian", "logistic")),
    "abs": (A.smooth_abs, abs, (0.0,), ("gaussian", "logistic")),
    "sign": (A.smooth_sign, np.sign, (0.0,), ("gaussian", "logistic", "cauchy")),
    "step": (A.smooth_step, step, (0.0,), ("gaussian", "logistic", "cauchy")),
    "floor": (A.smooth_floor, math.floor, tuple(range(-40, 41)), ("gaussian", "logistic")),
}


@pytest.mark.parametrize(
    "name, kernel, sigma",
    on_jax_too([
        (n, k, s)
        for n, case in CASES.items()
        for k in case[3]
        # floor: both branches (sigma < 1/2 direct, >= 1/2 Fourier); larger sigma
        # only makes the quad reference slow (one piece per integer)
        for s in ((0.05, 0.3, 0.5, 1.0) if n == "floor" else (0.05, 0.3, 1.0, 2.5))
    ], keep=lambda row: row[2] in (0.3, 1.0)),  # on JAX: each function and kernel, both floor branches
)
def test_closed_forms_match_quadrature(name, kernel, sigma):
    ours, f, jumps, _ = CASES[name]
    got = np.asarray(ours(XS, sigma, kernel=kernel))
    assert got.dtype == np.float64
    want = reference(f, XS, sigma, kernel, jumps)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.3])
def test_leaky_relu_matches_quadrature(kernel, alpha):
    got = np.asarray(A.smooth_leaky_relu(XS, alpha, 0.4, kernel=kernel))
    want = reference(lambda y: max(y, alpha * y), XS, 0.4, kernel, (0.0,))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
def test_smooth_max_matches_quadrature(kernel):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    got = np.asarray(A.smooth_max(a, b, 0.3, kernel=kernel))
    want = [
        convolve(lambda y, b=bi: max(y, b), ai, 0.3, kernel, (bi,))
        for ai, bi in zip(a, b, strict=True)
    ]
    # a - b and b are O(1): quad's own absolute error is ~1e-8 here
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    # symmetric
    np.testing.assert_allclose(got, np.asarray(A.smooth_max(b, a, 0.3, kernel=kernel)), rtol=1e-12)


def test_gelu_and_swish_are_smoothed_steps():
    x = np.linspace(-6, 6, 101)
    x64 = keras.ops.convert_to_tensor(x, "float64")
    gelu = keras.activations.gelu(x64, approximate=False)
    silu = keras.activations.silu(x64)
    ours_gelu = x * np.asarray(A.smooth_step(x, 1.0))
    ours_silu = x * np.asarray(A.smooth_step(x, 1.0, "logistic"))
    # GELU(x) = x Phi(x), SiLU(x) = x expit(x) by definition ...
    np.testing.assert_allclose(ours_gelu, x * stats.norm.cdf(x), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours_silu, x * stats.logistic.cdf(x), rtol=1e-12)
    # ... and as Keras computes them (its float64 GELU carries ~1e-7 relative error)
    np.testing.assert_allclose(ours_gelu, gelu, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours_silu, silu, rtol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_sigma_to_zero_recovers_f(name):
    ours, f, jumps, kernels = CASES[name]
    x = np.linspace(-3.0, 3.0, 61) + 0.05  # away from every jump by >= 0.05
    for kernel in kernels:
        got = np.asarray(ours(x, 1e-4, kernel=kernel))
        err = np.abs(got - np.array([f(v) for v in x]))
        if kernel == "cauchy":  # heavy tails: the error is 2 sigma / (pi d) at distance d
            assert np.all(err <= 2e-4 / (np.pi * np.abs(x)) * 1.01)
        else:
            assert np.all(err <= 1e-9)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: A.smooth_relu(x, 0.3),
        lambda x: A.smooth_abs(x, 0.3, "logistic"),
        lambda x: A.smooth_sign(x, 0.3, "cauchy"),
        lambda x: A.smooth_floor(x, 0.2),
        lambda x: A.smooth_floor(x, 0.7, "logistic"),
        lambda x: A.smooth_leaky_relu(x, 0.1, 0.5),
        lambda x: A.mollify(keras.ops.floor, x, 0.3),
    ],
)
def test_gradients_match_finite_differences(fn):
    (grad_x,) = grad(fn, f64(XS))
    h = 1e-6
    fd = (np.asarray(fn(XS + h)) - np.asarray(fn(XS - h))) / (2 * h)
    np.testing.assert_allclose(grad_x, fd, rtol=1e-5, atol=1e-6)


def test_relu_derivative_is_the_smoothed_step():
    (grad_x,) = grad(lambda x: A.smooth_relu(x, 0.5), f64(XS))
    np.testing.assert_allclose(grad_x, stats.norm.cdf(XS / 0.5), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
def test_low_precision_is_overflow_safe(dtype, kernel):
    x64 = np.array([-1e4, -300.0, -20.0, -1.0, 0.0, 1.0, 20.0, 300.0, 1e4])
    x = keras.ops.cast(x64, dtype)
    for fn in (A.smooth_relu, A.smooth_abs, A.smooth_sign, A.smooth_step, A.smooth_floor):
        for sigma in (0.01, 1.0):
            y = fn(x, sigma, kernel=kernel)
            assert keras.backend.standardize_dtype(y.dtype) == dtype
            y = np.asarray(keras.ops.cast(y, "float64"))
            want = np.asarray(fn(np.asarray(keras.ops.cast(x, "float64")), sigma, kernel=kernel))
            assert np.all(np.isfinite(y)), (fn.__name__, y)
            np.testing.assert_allclose(y, want, rtol=1e-2, atol=1e-2)


# --- mollify ---------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
@pytest.mark.parametrize("sigma", [0.1, 0.7])
def test_mollify_discontinuous_functions_match_quadrature(kernel, sigma):
    floor = reference(math.floor, XS, sigma, kernel, range(-40, 41))
    np.testing.assert_allclose(A.mollify(keras.ops.floor, XS, sigma, kernel), floor, atol=1e-4)
    stp = reference(step, XS, sigma, kernel, (0.0,))

    def keras_step(v):
        return keras.ops.cast(v > 0, v.dtype)

    np.testing.assert_allclose(A.mollify(keras_step, XS, sigma, kernel), stp, atol=1e-4)


def test_mollify_reproduces_closed_forms():
    for name, (ours, _, _, _) in CASES.items():
        fn = {
            "relu": keras.ops.relu,
            "abs": keras.ops.abs,
            "sign": keras.ops.sign,
            "step": lambda v: keras.ops.cast(v > 0, v.dtype),
            "floor": keras.ops.floor,
        }[name]
        np.testing.assert_allclose(A.mollify(fn, XS, 0.3), ours(XS, 0.3), atol=1e-7, err_msg=name)


def test_mollify_smooth_function_gauss_rules():
    want = reference(np.sin, XS, 0.7, "gaussian")
    # keras.ops.sin computes float64 in float32 on JAX (Keras 3.15, docs/backends.md)
    np.testing.assert_allclose(A.mollify(safe.sin, XS, 0.7, num_points=32, rule="gauss"), want, atol=1e-10)
    # closed form: E[sin(x + sigma Z)] = sin(x) exp(-sigma^2 / 2)
    np.testing.assert_allclose(want, np.sin(XS) * np.exp(-0.245), atol=1e-10)
    want = reference(np.tanh, XS, 0.5, "cauchy")
    got = A.mollify(keras.ops.tanh, XS, 0.5, "cauchy", num_points=256)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_mollify_jump_off_the_lattice_converges():
    """A jump at 1/3 is not on the dyadic lattice: O(h / sigma) error, shrinking with cells."""

    def third_step(v):
        return keras.ops.cast(v > 1.0 / 3.0, v.dtype)

    want = reference(lambda y: float(y > 1 / 3), XS, 0.5, "gaussian", (1 / 3,))
    errors = [
        np.abs(np.asarray(A.mollify(third_step, XS, 0.5, num_points=n)) - want).max()
        for n in (128, 512, 2048)
    ]
    assert errors[0] < 2e-2 and errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2


def test_mollify_per_element_sigma_and_float16():
    sigma = np.linspace(0.1, 1.0, XS.size)
    got = A.mollify(keras.ops.relu, XS, sigma)
    np.testing.assert_allclose(got, A.smooth_relu(XS, sigma), atol=1e-7)
    y16 = A.mollify(keras.ops.relu, keras.ops.cast(XS, "float16"), 0.3)
    assert keras.backend.standardize_dtype(y16.dtype) == "float16"


# --- bad arguments ---------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match=r"sigma=.*" + str(sigma)[:3]):
        A.smooth_relu(XS, sigma)


def test_bad_kernel_and_fn():
    with pytest.raises(ValueError, match="kernel='box'"):
        A.smooth_sign(XS, 1.0, kernel="box")
    with pytest.raises(ValueError, match="Cauchy kernel has no mean"):
        A.smooth_relu(XS, 1.0, kernel="cauchy")
    with pytest.raises(ValueError, match="fn=3"):
        A.mollify(3, XS)
    with pytest.raises(ValueError, match="keras.ops"):
        A.mollify(lambda v: np.floor(v), XS)  # numpy, not traceable by keras.ops
    with pytest.raises(ValueError, match="num_points=1"):
        A.mollify(keras.ops.relu, XS, num_points=1)
    with pytest.raises(ValueError, match="rule='simpson'"):
        A.mollify(keras.ops.relu, XS, rule="simpson")


# (function, slope a, scale b) of a x + b relu_s(x); SAU's a = alpha, b = 1 - alpha.
SAU_ALPHA = np.array([0.1, 0.4])
MIXES = {
    "relu": (lambda x, s, k: A.smooth_relu(x, s, k), 0.0, 1.0),
    "abs": (lambda x, s, k: A.smooth_abs(x, s, k), -1.0, 2.0),
    "leaky_relu": (lambda x, s, k: A.smooth_leaky_relu(x, SAU_ALPHA, s, k), SAU_ALPHA, 1 - SAU_ALPHA),
}


def _relu_s_reference(x, sigma, kernel):
    """relu_s, d relu_s/dsigma, F, f at u = x / sigma, all from scipy."""
    u = x / sigma
    dist = DIST[kernel]
    if kernel == "gaussian":
        value, dsigma = x * dist.cdf(u) + sigma * dist.pdf(u), dist.pdf(u)
    else:
        value = sigma * np.logaddexp(0.0, u)
        dsigma = np.logaddexp(0.0, u) - u * dist.cdf(u)
    return value, dsigma, dist.cdf(u), dist.pdf(u)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
@pytest.mark.parametrize("name", list(MIXES))
def test_closed_form_gradients_first_second_and_mixed(name, kernel, graph):
    """The custom gradients of relu / abs / SAU against scipy's formulas: d/dx,
    d2/dx2 (the kernel density), d/dsigma and d/dsigma d/dx, for a per-channel
    sigma (its gradient summed over the batch), in float64."""
    fn, a, b = MIXES[name]
    x_np = np.stack([XS, -0.5 * XS + 0.2], axis=1)  # (37, 2)
    sigma_np = np.array([0.3, 0.8])
    first = gradient_function(lambda x, sigma: fn(x, sigma, kernel))
    # fn is elementwise in x, so d/dx of sum(dx) is d2/dx2 entry by entry
    second = gradient_function(lambda x, sigma: first(x, sigma)[0])

    def derivatives(x, sigma):
        return (*first(x, sigma), *second(x, sigma))

    if graph:
        derivatives = compiled(derivatives)
    dx, dsigma, dxx, dx_dsigma = (numpy(t) for t in derivatives(f64(x_np), f64(sigma_np)))
    _, ds_ref, cdf, pdf = _relu_s_reference(x_np, sigma_np, kernel)
    u = x_np / sigma_np
    tol = dict(rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dx, a + b * cdf, **tol)
    np.testing.assert_allclose(dxx, b * pdf / sigma_np, **tol)
    np.testing.assert_allclose(dsigma, np.sum(b * ds_ref, axis=0), **tol)
    np.testing.assert_allclose(dx_dsigma, np.sum(-b * u * pdf / sigma_np, axis=0), **tol)


def test_sau_alpha_gradient_and_its_x_derivative():
    """d/dalpha (x - relu_s(x)) per channel, and d/dx of it (1 - F), against scipy."""
    x_np = np.stack([XS, -0.5 * XS + 0.2], axis=1)
    first = gradient_function(lambda x, alpha: A.smooth_leaky_relu(x, alpha, 0.3))
    x, alpha = f64(x_np), f64([0.1, 0.4])
    dalpha = numpy(first(x, alpha)[1])
    dx_dalpha = numpy(gradient_function(lambda x, alpha: first(x, alpha)[1])(x, alpha)[0])
    value, _, cdf, _ = _relu_s_reference(x_np, 0.3, "gaussian")
    np.testing.assert_allclose(dalpha, np.sum(x_np - value, axis=0), rtol=1e-10)
    np.testing.assert_allclose(dx_dalpha, 1.0 - cdf, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
def test_gradients_at_infinity_are_the_limits(kernel):
    """At x = +-inf: the value is f's limit, d/dx the limit of the slope, and the sigma
    and alpha gradients 0 (never NaN), as for the finite neighbours far out."""
    x, sigma, alpha = f64([np.inf, -np.inf, 1e30, -1e30]), f64(0.5), f64(0.2)
    expected_dx = {"relu": [1, 0, 1, 0], "abs": [1, -1, 1, -1], "leaky_relu": [1, 0.2, 1, 0.2]}
    for name, fn in (("relu", lambda x, s, a: A.smooth_relu(x, s, kernel)),
                     ("abs", lambda x, s, a: A.smooth_abs(x, s, kernel)),
                     ("leaky_relu", lambda x, s, a: A.smooth_leaky_relu(x, a, s, kernel))):
        dx, dsigma, dalpha = grad(fn, x, sigma, alpha)
        np.testing.assert_array_equal(dx, expected_dx[name], err_msg=name)
        assert float(dsigma) == 0.0, name
        if name == "leaky_relu":  # x - relu_s(x) is 0 at x = 1e30, and set to 0 at +-inf
            assert float(dalpha) == pytest.approx(-1e30, rel=1e-12), name


@pytest.mark.parametrize("kernel", ["gaussian", "logistic"])
@pytest.mark.parametrize("sigma", [0.1, 1.0])  # the direct sum and the Fourier branch
def test_smooth_floor_limits_at_infinity(kernel, sigma):
    """+-inf map to +-inf (they gave NaN: issue 30), NaN stays NaN, the finite entry is
    the scipy reference; d/dx at +-inf is floor's mean slope 1 and d/dsigma 0."""
    s = f64(sigma)
    y = numpy(A.smooth_floor(f64([np.inf, -np.inf, np.nan, 2.5]), s, kernel))
    assert y[0] == np.inf and y[1] == -np.inf and np.isnan(y[2])
    np.testing.assert_allclose(y[3], floor_reference([2.5], sigma, kernel)[0], rtol=1e-12)
    dx, ds = grad(lambda ends, s: A.smooth_floor(ends, s, kernel)[:2], f64([np.inf, -np.inf, 2.5]), s)
    np.testing.assert_array_equal(dx, [1.0, 1.0, 0.0])
    assert float(ds) == 0.0
    layer = SmoothActivation("floor", sigma=sigma, kernel=kernel)
    np.testing.assert_array_equal(np.asarray(layer(np.array([np.inf, -np.inf], "float32"))),
                                  [np.inf, -np.inf])


def test_float64_gaussian_relu_far_tail_against_mpmath():
    """u = -35 was 4.3e-11 relative off (issue 30): the continued-fraction tail keeps
    (3 u^2 + 20) ulps (tests/properties_test.py has the analysis) down to u = -37;
    below, the value is sub-normal (absolute error under 1e-300)."""
    import mpmath

    u = np.array([-3.0, -3.5, -7.0, -12.5, -35.0, -37.0, -38.0])
    with mpmath.workdps(40):
        want = np.array([float(v * mpmath.ncdf(v) + mpmath.npdf(v)) for v in map(mpmath.mpf, u)])
    got = np.asarray(A.smooth_relu(f64(u), f64(1.0)))
    eps = np.finfo("float64").eps
    assert np.all(np.abs(got - want) <= (3 * u**2 + 20) * eps * want + 1e-300), (got - want) / want
