"""vMF numerics against mpmath/scipy; samplers against A_d and the exact CDF."""

import functools
import math

import mpmath as mp
import numpy as np
import pytest
from keras import ops
from scipy import integrate, optimize, special, stats

from keras_space.ops import (
    _bessel,
    _special,
    vmf,
    vmf_kl_to_uniform,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)
from tests.backend import derivative, f64, grad, numpy, on_jax_too

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

DIMS = [2, 3, 16, 128, 768, 4096]
KAPPAS = [1e-2, 1.0, 10.0, 1e3, 1e5]
mp.mp.dps = 40


def ref_a(d, k):
    """A_d by scipy where it does not underflow, mpmath otherwise."""
    with np.errstate(all="ignore"):
        value = special.ive(d / 2, k) / special.ive(d / 2 - 1, k)
    if np.isfinite(value) and value > 0:
        return float(value)
    return float(mp.besseli(d / 2, k) / mp.besseli(d / 2 - 1, k))


def ref_a_prime(d, k):
    k = mp.mpf(k)
    a = mp.besseli(d / 2, k) / mp.besseli(d / 2 - 1, k)
    return 1 - a**2 - (d - 1) * a / k


def ref_log_c(d, k):
    return (d / 2 - 1) * mp.log(k) - (d / 2) * mp.log(2 * mp.pi) - mp.log(mp.besseli(d / 2 - 1, k))


def ref_kl(d, k):
    log_area = mp.log(2) + (d / 2) * mp.log(mp.pi) - mp.loggamma(mp.mpf(d) / 2)
    a = mp.besseli(d / 2, k) / mp.besseli(d / 2 - 1, k)
    return float(k * a + ref_log_c(d, k) + log_area)


@pytest.mark.parametrize("d", DIMS)
def test_normalizer_a_and_kl_against_mpmath(d):
    for k in [1e-3, *KAPPAS]:
        np.testing.assert_allclose(float(vmf_log_normalizer(d, k)), float(ref_log_c(d, k)), rtol=1e-12)
        np.testing.assert_allclose(float(vmf_mean_resultant_length(d, k)), ref_a(d, k), rtol=1e-12)
        kl = float(vmf_kl_to_uniform(d, k))
        assert kl > 0
        np.testing.assert_allclose(kl, ref_kl(d, k), rtol=1e-9)


def test_closed_forms_in_three_dimensions():
    for k in (0.5, 3.0, 40.0):
        np.testing.assert_allclose(float(vmf_mean_resultant_length(3, k)), 1 / np.tanh(k) - 1 / k, rtol=1e-12)
        np.testing.assert_allclose(
            float(vmf_log_normalizer(3, k)), np.log(k / (4 * np.pi * np.sinh(k))), rtol=1e-12
        )


@pytest.mark.parametrize("d", DIMS)
def test_kl_gradient_finite_and_correct(d):
    kl = numpy(vmf_kl_to_uniform(d, f64(KAPPAS)))
    (g,) = grad(lambda k: vmf_kl_to_uniform(d, k), f64(KAPPAS))
    assert np.all(np.isfinite(kl)) and np.all(np.isfinite(g))
    # d KL / d kappa = kappa A_d'(kappa), A_d' = 1 - A_d^2 - (d - 1) A_d / kappa,
    # evaluated in mpmath (in float64 the identity cancels badly for large d, kappa)
    want = np.array([float(k * ref_a_prime(d, k)) for k in KAPPAS])
    # float64 conditioning: kappa A' is a difference of O(d) terms, so its
    # absolute error is ~ kappa * d * eps whatever the formula
    bound = 1e-7 * np.abs(want) + 1e-15 * np.array(KAPPAS) * d
    assert np.all(np.abs(g - want) <= bound), (g, want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="d=1"):
        vmf_kl_to_uniform(1, 1.0)
    with pytest.raises(ValueError, match="kappa=0"):
        vmf_log_normalizer(3, 0)
    with pytest.raises(ValueError, match="kappa=-1"):
        vmf_mean_resultant_length(3, -1.0)


# --- samplers ----------------------------------------------------------------


def draw(sampler, d, k, n, seed=(1, 2)):
    if sampler == "wood":
        w, omw = vmf._wood_sample_w(d, k, (n,), seed)
    elif sampler == "closed_form":
        w, omw = vmf._sample_w(d, k, (n,), seed, sampler="closed_form")
    else:
        w, omw = vmf._table_sample_w(vmf._inverse_cdf_table(d, k), (n,), seed)
    return numpy(w), numpy(omw)


SAMPLER_DIMS = on_jax_too([(s, d) for s in ("wood", "table") for d in DIMS] + [("closed_form", 3)],
                          every=5)


@pytest.mark.slow
@pytest.mark.parametrize("sampler, d", SAMPLER_DIMS)
def test_mean_of_w_is_a_d_within_3_standard_errors(sampler, d):
    n = 20000
    for k in KAPPAS:
        w, omw = draw(sampler, d, k, n)
        assert np.all(np.isfinite(w)) and np.all(np.abs(w) <= 1)
        np.testing.assert_allclose(omw, 1 - w, atol=1e-12)
        se = w.std() / math.sqrt(n)
        assert abs(w.mean() - ref_a(d, k)) < 3 * se, (d, k, w.mean(), ref_a(d, k), se)


def exact_cdf(d, k):
    """P(W <= w) by scipy.quad of exp(k cos t) sin^{d-2} t over [arccos w, pi]."""
    c_mode = (-(d - 2) + math.sqrt((d - 2) ** 2 + 4 * k * k)) / (2 * k)
    t_mode = math.acos(min(1.0, c_mode))

    def density(t):
        log = k * (math.cos(t) - math.cos(t_mode))
        if d > 2:
            log += (d - 2) * (math.log(math.sin(t)) - math.log(max(math.sin(t_mode), 1e-300)))
        return math.exp(log)

    total = integrate.quad(density, 0, math.pi, points=[t_mode], limit=500, epsrel=1e-12)[0]

    def cdf(ws):
        out = []
        for w in np.atleast_1d(ws):
            t = math.acos(min(1.0, max(-1.0, w)))
            pts = [t_mode] if t < t_mode < math.pi else None
            out.append(integrate.quad(density, t, math.pi, points=pts, limit=500, epsrel=1e-12)[0] / total)
        return np.array(out)

    return cdf


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize(
    "sampler, d, k",
    on_jax_too([(s, d, k) for s in ("wood", "table")
                for d, k in [(2, 1e-2), (3, 10.0), (16, 1.0), (128, 1e3), (768, 1e5), (4096, 10.0)]]
               + [("closed_form", 3, k) for k in (1e-3, 10.0, 1e5)], every=5),
)
def test_ks_against_the_exact_cdf(sampler, d, k):
    w, _ = draw(sampler, d, k, 1500, seed=(5, 6))
    result = stats.kstest(w, exact_cdf(d, k))
    assert result.pvalue > 1e-3, result


def closed_form_reference(k, u):
    """d = 3 inverse CDF in 40-digit mpmath: 1 - w = 1 - log(e^-k + u (e^k - e^-k)) / k."""
    k, u = mp.mpf(k), mp.mpf(u)
    return 1 - mp.log(mp.e ** -k + u * (mp.e**k - mp.e ** -k)) / k


@pytest.mark.parametrize("k", [1e-3, 1.0, 10.0, 1e3, 1e5])
def test_d3_closed_form_inverse_cdf_and_its_kappa_gradient(k):
    """1 - w to 1e-12 relative against mpmath at fixed u (tails included), and the
    autodiff kappa gradient against mpmath's derivative of the inverse CDF."""
    us = np.array([0.0, 1e-300, 1e-12, 0.01, 0.3, 0.5, 0.9, 1 - 1e-12, 1 - 2.0**-53])
    w, omw = map(numpy, vmf._closed_form_w(f64(k), f64(us)))
    dw = derivative(lambda kap: vmf._closed_form_w(kap, f64(us))[0], f64(k))
    want = np.array([float(closed_form_reference(k, u)) for u in us])
    np.testing.assert_allclose(omw, want, rtol=1e-12)
    np.testing.assert_allclose(w, 1 - want, rtol=1e-12, atol=1e-300)
    deriv = np.array([-float(mp.diff(lambda kk, u=u: closed_form_reference(kk, u), k)) for u in us])
    # where w -> -1 the derivative is a cancellation of terms ~2 / kappa: float64 rounding of those
    atol = 8e-16 * (2.0 / k + 1.0)
    np.testing.assert_allclose(dw, deriv, rtol=1e-9, atol=atol)
    assert np.all(np.isfinite(dw))
    # the implicit-reparameterisation quadrature of the other samplers agrees (to its 1e-5)
    inner = slice(3, -2)
    np.testing.assert_allclose(numpy(vmf._dw_dkappa(w[inner], 3, k)), dw[inner], rtol=1e-5, atol=atol)


# --- gradients -----------------------------------------------------------------


def inverse_cdf_reference(d, k, u):
    cdf = exact_cdf(d, k)
    return optimize.brentq(lambda w: cdf(w)[0] - u, -1 + 1e-15, 1 - 1e-15, xtol=1e-15, rtol=1e-15)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("d, k", on_jax_too([(2, 3.0), (3, 1.0), (3, 10.0), (16, 5.0), (128, 50.0),
                                             (768, 1000.0)]))
def test_implicit_kappa_gradient_against_inverse_cdf_differences(d, k):
    us = [0.05, 0.5, 0.95]
    w = np.array([inverse_cdf_reference(d, k, u) for u in us])
    h = k * 1e-5
    fd = np.array(
        [(inverse_cdf_reference(d, k + h, u) - inverse_cdf_reference(d, k - h, u)) / (2 * h) for u in us]
    )
    got = numpy(vmf._dw_dkappa(f64(w), d, k))
    np.testing.assert_allclose(got, fd, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("d, k", on_jax_too([(3, 2.0), (16, 10.0), (128, 300.0), (4096, 1e4)]))
def test_kappa_gradient_is_unbiased(d, k):
    """d/dkappa E[w] = A_d'(kappa): the mean implicit gradient over samples matches it."""
    n = 20000
    def mean_w(kap):
        return ops.sum(vmf._sample_w(d, kap, (n,), (3, 4), reparameterize_kappa=True)[0]) / n

    w, _ = vmf._sample_w(d, f64(k), (n,), (3, 4), reparameterize_kappa=True)
    per_sample = numpy(vmf._dw_dkappa(w, d, k))
    assert np.all(np.isfinite(per_sample))
    np.testing.assert_allclose(grad(mean_w, f64(k))[0], per_sample.mean(), rtol=1e-10)
    want = float(ref_a_prime(d, k))
    se = per_sample.std() / math.sqrt(n)
    assert abs(per_sample.mean() - want) < 3 * se + 1e-12, (per_sample.mean(), want, se)


@pytest.mark.parametrize("d", on_jax_too(DIMS, every=3))
def test_sampler_gradients_finite_over_the_grid(d):
    for k in KAPPAS:
        def total(kap):
            w, omw = vmf._sample_w(d, kap, (500,), (7, 8), reparameterize_kappa=True)
            return ops.sum(w) + ops.sum(omw)

        (g,) = grad(total, f64(k))
        assert np.isfinite(g), (d, k)
        w, _ = vmf._sample_w(d, f64(k), (500,), (7, 8))
        assert np.all(np.isfinite(numpy(vmf._dw_dkappa(w, d, k))))


@pytest.mark.parametrize("d", [6, 3])
def test_gradient_wrt_mu_matches_finite_differences_of_a_fixed_noise_sample(d):
    """d = 6 projects normal noise off mu; d = 3 turns one angle in the basis
    around mu (rows on both sides of mu_z = 0, where that basis flips)."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, d)) * [[1.0], [1.0], [1.0], [-1.0]]
    if d == 3:
        angle = f64(rng.uniform(0, 2 * np.pi, size=4))
        sample = lambda mu, w: vmf._sample_on_sphere_3d(mu, w, 1.0 - w, angle)  # noqa: E731
    else:
        noise = f64(rng.normal(size=(4, d)))
        sample = lambda mu, w: vmf._sample_on_sphere(mu, w, 1.0 - w, noise)  # noqa: E731
    w = f64([0.3, -0.5, 0.9, 0.99])
    c = f64(rng.normal(size=(4, d)))

    def f(x_):
        mu = x_ / ops.sqrt(ops.sum(ops.square(x_), axis=-1, keepdims=True))
        return ops.sum(c * sample(mu, w))

    (g,) = grad(f, f64(base))
    h = 1e-6
    fd = np.zeros_like(g)
    for i in np.ndindex(base.shape):
        plus, minus = base.copy(), base.copy()
        plus[i] += h
        minus[i] -= h
        fd[i] = (numpy(f(f64(plus))) - numpy(f(f64(minus)))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # the sample is on the sphere, at cosine w from mu
    mu = base / np.linalg.norm(base, axis=1, keepdims=True)
    z = numpy(sample(f64(mu), w))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.sum(z * mu, axis=1), numpy(w), rtol=1e-12)


def test_d3_angle_route_is_exact_in_float32_and_uniform_around_mu():
    """Poles, equator and random directions: |z| - 1 and <z, mu> - w at float32
    rounding, and the angle turns z rigidly around mu (read in a basis numpy
    builds by Gram-Schmidt). The layer's d = 3 samples: the angle around mu
    uniform and w = <z, mu> following the exact CDF (KS both)."""
    from keras_space.layers import VonMisesFisher

    rng = np.random.default_rng(1)
    dirs = [[0, 0, 1], [0, 0, -1], [1, 0, 0], [0, -1, 0], [0.6, 0, -0.8], *rng.normal(size=(3, 3))]
    n, k = 4000, 4.0
    layer = VonMisesFisher(kappa=k, seed=0)
    cdf = exact_cdf(3, k)
    reference = np.array([0.3, 0.5, 0.7])  # off every direction in dirs
    for m in dirs:
        m = np.asarray(m, "float64") / np.linalg.norm(m)
        e1 = reference - (reference @ m) * m
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(m, e1)
        mu = np.repeat(m[None].astype("float32"), n, axis=0)
        one_minus_w = rng.uniform(1e-6, 2.0, size=n).astype("float32")
        angle = rng.uniform(0, 2 * np.pi, size=n).astype("float32")
        z = numpy(vmf._sample_on_sphere_3d(*map(ops.convert_to_tensor, (
            mu, 1 - one_minus_w, one_minus_w, angle))))
        z = z.astype("float64")
        assert np.abs(np.linalg.norm(z, axis=1) - 1).max() < 1e-6
        assert np.abs(z @ m - (1.0 - one_minus_w.astype("float64"))).max() < 1e-6
        around = np.arctan2(z @ e2, z @ e1)
        turn = [np.angle(np.exp(1j * (around - sign * angle))) for sign in (1, -1)]
        big = one_minus_w > 1e-3  # the angle is well defined away from mu
        assert min(np.ptp(t[big]) for t in turn) < 1e-3  # a fixed rotation (or reflection)

        z = numpy(layer(mu, training=True)).astype("float64")
        around = np.mod(np.arctan2(z @ e2, z @ e1), 2 * np.pi)
        assert stats.kstest(around, stats.uniform(0, 2 * np.pi).cdf).pvalue > 1e-3
        assert stats.kstest(z @ m, cdf).pvalue > 1e-3


def test_table_is_small():
    table = vmf._inverse_cdf_table(4096, 1e5)
    assert table.shape == (4097,) and table.nbytes < 40_000
    assert np.all(np.diff(table) >= 0)


@pytest.mark.parametrize("d", [3, 16])
def test_a_tensor_of_kappas_matches_the_scalar_branches(d):
    """A scalar kappa runs one branch (ops.cond), a tensor both (element-wise where):
    the same values, and the same gradients, on both sides of the switch. The
    vectorised and scalar kernels may round differently in the last place, so the
    bound is a few ulps of the largest intermediate: the KL is kappa A + log C +
    log|S|, and log C comes from log I at order max(d/2 - 1, 20) minus the log
    ratios down to d/2 - 1 (`_bessel`), each exact to a few ulps; the gradient
    kappa (1 - A^2) - (d - 1) A likewise."""
    ks = np.array([1e-2, 1.0, 1.99, 2.01, 10.0, 1e3])
    eps = np.finfo("float64").eps
    kl_of = functools.partial(vmf_kl_to_uniform, d)
    kl = numpy(kl_of(f64(ks)))
    (grads,) = grad(kl_of, f64(ks))
    a = numpy(vmf_mean_resultant_length(d, f64(ks)))
    log_c = numpy(vmf_log_normalizer(d, f64(ks)))
    top_order, _ = _bessel._start(d / 2 - 1)
    log_i_top = np.abs(numpy(_bessel._log_ive_top(top_order, f64(ks)))) + ks
    for i, k in enumerate(ks):
        scale = abs(k * a[i]) + abs(log_c[i]) + abs(_special.log_sphere_area(d)) + log_i_top[i]
        np.testing.assert_allclose(kl[i], float(kl_of(f64(k))), rtol=0, atol=8 * eps * scale)
        np.testing.assert_allclose(grads[i], grad(kl_of, f64(k))[0], rtol=0, atol=8 * eps * (k + d))
        np.testing.assert_allclose(a[i], float(vmf_mean_resultant_length(d, k)), rtol=8 * eps)


def test_bessel_functions_against_mpmath():
    """`_bessel` directly, also at orders no vMF dimension uses: log(I_v(x) e^-x) to a few
    ulps of the largest term it sums (log I at the expansion's order and the ratios'
    logs, each ~|log I_nu|), the ratio I_{v+1}/I_v to a few ulps per recurrence step."""
    eps = np.finfo("float64").eps
    xs = np.array([1e-3, 0.1, 1.0, 2.5, 10.0, 40.0, 300.0, 1e4, 1e5])
    for v in (0.0, 0.5, 3.0, 7.5, 19.5, 20.0, 20.5, 383.0, 2047.0):
        log_ive = numpy(_bessel.log_bessel_ive(v, f64(xs)))
        ratio = numpy(_bessel.bessel_iv_ratio(v, f64(xs)))
        top, steps = _bessel._start(v)
        scale = np.abs(numpy(_bessel._log_ive_top(top, f64(xs)))) + 1.0
        for i, x in enumerate(xs):
            x = mp.mpf(x)
            i_v = mp.besseli(v, x, maxterms=10**6)
            want_log = float(mp.log(i_v) - x)
            want_ratio = float(mp.besseli(v + 1, x, maxterms=10**6) / i_v)
            assert abs(log_ive[i] - want_log) <= 32 * eps * scale[i], (v, float(x))
            assert abs(ratio[i] / want_ratio - 1) <= 8 * eps * (steps + 2), (v, float(x))
