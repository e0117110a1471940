"""PowerSpherical: samples against the Beta law of <z, mu>, KL against numerical
integration, log-density against TFP and mpmath, gradients against finite differences."""

import functools
import math

import keras
import mpmath as mp
import numpy as np
import pytest
from scipy import special, stats

from keras_space.layers import PowerSpherical
from keras_space.ops import _stateless_random as rnd
from keras_space.ops import power_spherical as ps
from keras_space.ops import power_spherical_kl_to_uniform, power_spherical_log_prob
from keras_space.testing import run_layer_contract
from tests.backend import BACKEND, compiled, f64, grad, numpy, on_jax_too

pytestmark = pytest.mark.all_backends

X = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
KAPPAS = np.array([1e-3, 0.5, 1.0, 2.01, 10.0, 300.0, 1e4, 1e5], "float32")
DIMS = [2, 3, 16, 128, 768, 4096]
EPS = np.finfo("float64").eps
fast = compiled if BACKEND == "jax" else (lambda fn: fn)  # JAX: one program, not one per op


@pytest.mark.parametrize(
    "kwargs, data",
    [({"kappa": None, "seed": 4}, [X, KAPPAS[:, None]]),  # first: the one exported
     ({"kappa": 20.0, "seed": 1}, X), ({"kappa": 5.0, "learn_kappa": True, "seed": 2}, X)],
    ids=["per_example", "fixed", "learned"],
)
def test_layer_contract(kwargs, data, saved_model_once):
    run_layer_contract(PowerSpherical, kwargs, input_data=data, expected_output_shape=(8, 5),
                       run_saved_model=saved_model_once)


@functools.cache
def kl_by_integration(d, k):
    """KL(p || uniform) from the law of c = (1 + <z, mu>)/2 alone, by mpmath quadrature:
    p(c) ~ c^(b + k - 1) (1 - c)^(b - 1), uniform ~ (c (1 - c))^(b - 1), b = (d - 1)/2, so
    KL = k E_p[log c] - log Z_p + log Z_u (Z the integrals of the unnormalised densities;
    no lgamma or digamma)."""
    with mp.workdps(40):
        b, k = mp.mpf(d - 1) / 2, mp.mpf(k)
        mode = min(max((b + k - 1) / (2 * b + k - 2), mp.mpf(0)), mp.mpf(1)) if d > 2 else mp.mpf(1)
        width = mp.sqrt((b + k) * b / ((2 * b + k) ** 2 * (2 * b + k + 1)))
        cuts = sorted({mp.mpf(0), mp.mpf(1), *[min(max(mode + j * width, mp.mpf(0)), mp.mpf(1))
                                               for j in (-30, -8, -2, 0, 2, 8, 30)]})
        log_at_mode = (b + k - 1) * mp.log(max(mode, mp.mpf(10) ** -30)) + (b - 1) * mp.log(
            max(1 - mode, mp.mpf(10) ** -30))

        def p(c):
            return mp.exp((b + k - 1) * mp.log(c) + (b - 1) * mp.log(1 - c) - log_at_mode)

        z_p = mp.quad(p, cuts)
        mean_log = mp.quad(lambda c: p(c) * mp.log(c), cuts) / z_p
        log_z_u = 2 * mp.loggamma(b) - mp.loggamma(2 * b)  # the Beta(b, b) integral
        return float(k * mean_log - (mp.log(z_p) + log_at_mode) + log_z_u)


def ref_log_prob(d, k, t):
    with mp.workdps(40):
        b, k = mp.mpf(d - 1) / 2, mp.mpf(k)
        log_n = (2 * b + k) * mp.log(2) + b * mp.log(mp.pi) + mp.loggamma(b + k) - mp.loggamma(2 * b + k)
        return float(k * mp.log(1 + t) - log_n)


@pytest.mark.parametrize("d", on_jax_too(DIMS, every=3))  # JAX: 2, 128, 4096 (both branches each)
def test_kl_against_numerical_integration_and_continuous_at_the_switch(d):
    ks = np.array([1e-3, 0.3, 1.0, 7.0, 0.5 * (d - 1) * 0.5 + 3.0, 1e3, 1e5])
    kl = numpy(fast(functools.partial(ps._kl_to_uniform, d))(f64(ks)))
    want = np.array([kl_by_integration(d, k) for k in ks])
    np.testing.assert_allclose(kl, want, rtol=1e-11)
    # the gradient: k (psi'(b + k) - psi'(2 b + k)), against the derivative of the integral
    (g,) = grad(fast(functools.partial(ps._kl_to_uniform, d)), f64(ks))
    with mp.workdps(30):
        b = mp.mpf(d - 1) / 2
        want_g = [float(k * (mp.psi(1, b + k) - mp.psi(1, 2 * b + k))) for k in ks]
    np.testing.assert_allclose(g, want_g, rtol=1e-11)
    # at the switch kappa = max(1, b / 2) (integral below, closed form above): steps of
    # 64 ulps change the value by slope x step plus rounding of the terms' size
    limit = max(1.0, 0.25 * (d - 1))
    walk = limit + np.arange(-8, 9) * 64 * EPS * limit
    values = numpy(fast(functools.partial(ps._kl_to_uniform, d))(f64(walk)))
    slope = float(limit * (mp.psi(1, (d - 1) / 2 + limit) - mp.psi(1, d - 1 + limit)))
    scale = abs(math.lgamma(d - 1 + limit)) + abs(math.lgamma((d - 1) / 2 + limit)) + limit * math.log(d + limit)
    np.testing.assert_array_less(np.abs(np.diff(values) - slope * np.diff(walk)), 64 * EPS * scale)


def test_log_prob_against_mpmath_and_tfp():
    """Points at cosines 1 - 1e-6, 0.5 and -0.9 from mu, kappa from 1e-3 to 1e5: against
    the closed form in 40-digit mpmath, and (TensorFlow) against TFP's PowerSpherical to
    its own rounding (its kappa log(1 + t) and lgamma terms are ~kappa and ~kappa log
    kappa large, cancelling to the result)."""
    rng = np.random.default_rng(1)
    kappas = np.repeat([1e-3, 1.0, 50.0, 1e5], 3)
    cosines = np.tile([0.999999, 0.5, -0.9], 4)
    for d in (2, 3, 16, 768, 4096):
        mu = rng.normal(size=(len(kappas), d))
        orth = rng.normal(size=mu.shape)
        orth -= np.sum(orth * mu, 1, keepdims=True) / np.sum(mu * mu, 1, keepdims=True) * mu
        unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
        x = cosines[:, None] * unit + np.sqrt(1 - cosines[:, None] ** 2) * orth / np.linalg.norm(
            orth, axis=1, keepdims=True)
        got = numpy(power_spherical_log_prob(x, 3.0 * mu, kappas))  # mu of any length
        with mp.workdps(40):  # the cosine the float64 x and mu hold (float64 sums lose 1 - t)
            t_exact = [mp.fdot(map(mp.mpf, xi), map(mp.mpf, mi)) / mp.norm(list(map(mp.mpf, mi)))
                       for xi, mi in zip(x, mu, strict=True)]
        want = [ref_log_prob(d, k, t) for k, t in zip(kappas, t_exact, strict=True)]
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        if BACKEND == "tensorflow":  # TFP's PowerSpherical: the same law
            import tensorflow_probability as tfp

            law = tfp.distributions.PowerSpherical(unit, kappas)
            b = (d - 1) / 2  # its terms: k log(1 + t), log N's four
            tfp_error = 8 * EPS * (kappas * np.abs(np.log1p(cosines)) + (2 * b + kappas) * math.log(2)
                                   + b * math.log(math.pi)
                                   + np.abs([math.lgamma(b + k) for k in kappas])
                                   + np.abs([math.lgamma(2 * b + k) for k in kappas]))
            np.testing.assert_array_less(np.abs(got - law.log_prob(x).numpy()), tfp_error)
    antipode = numpy(power_spherical_log_prob([[0.0, 0.0, -1.0]], [[0.0, 0.0, 1.0]], 2.0))
    assert np.isneginf(antipode).all()


@pytest.mark.parametrize("d", on_jax_too([2, 3, 16, 768, 4096], keep=lambda d: d in (2, 16)))
def test_samples_follow_the_beta_law_of_the_cosine(d):
    """One call, kappa per example over 8 decades: each group's (1 + t)/2 (the float64
    draws) passes a KS test against Beta(b + k, b) (p > 1e-4) and E[t] = k / (d - 1 + k)
    within 4 standard errors (25 groups: a false alarm rate below 0.5 % in all); the float32 sample is a unit vector at cosine t from mu (to float32
    rounding: sqrt(d) ulps for the norm, relative to 1 - t for the cosine's complement)."""
    n = {768: 1000, 4096: 400}.get(d, 4000)
    kappas = [1e-3, 1.0, 10.0, 1e3, 1e5]
    mu = np.tile(np.random.default_rng(d).normal(size=(1, d)).astype("float32"), (n * 5, 1))
    unit = mu[0].astype("float64") / np.linalg.norm(mu[0].astype("float64"))
    seed = rnd.seed_tensor((3, 4))
    k = f64(np.repeat(kappas, n))
    z = numpy(fast(lambda k: ps._sample(keras.ops.convert_to_tensor(unit[None] * np.ones((len(mu), 1)),
                                                                       "float32"), k, seed))(k))
    g_a, g_b = map(numpy, fast(lambda k: ps._gammas(d, k, (len(mu),), rnd.split(seed, 2)[0]))(k))
    t = (g_a - g_b) / (g_a + g_b)
    z = z.astype("float64")
    f32 = np.finfo("float32").eps
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=2 * f32 * math.sqrt(d))
    bound = 8 * f32 * (1 + math.sqrt(d) * np.sqrt(1 - t * t))  # t's rounding, the turn's
    np.testing.assert_array_less(np.abs((1 - z @ unit) - 2 * g_b / (g_a + g_b)), bound)
    b = (d - 1) / 2
    for j, k in enumerate(kappas):
        c = g_a[j * n:(j + 1) * n] / (g_a + g_b)[j * n:(j + 1) * n]  # (1 + t)/2
        assert stats.kstest(c, stats.beta(b + k, b).cdf).pvalue > 1e-4, (d, k)
        tj = 2 * c - 1
        se = tj.std() / math.sqrt(n)
        assert abs(tj.mean() - k / (d - 1 + k)) < 4 * se + 1e-12, (d, k, tj.mean(), se)


@pytest.mark.parametrize("d", on_jax_too([3, 64], keep=lambda d: d == 64))
def test_kappa_gradient_per_sample_against_inverse_cdf_differences_and_unbiased(d):
    """The Gamma draw's gradient in kappa is the implicit one: dg/dalpha at fixed
    u = P(alpha, g), against finite differences of scipy's gammaincinv; through the
    layer's sample, d<z_i, mu>/dkappa_i = 2 g_b / (g_a + g_b)^2 dg_a/dalpha (row by row);
    over many rows its mean is d E[t] / dkappa = (d - 1) / (d - 1 + kappa)^2."""
    kappas = np.array([0.3, 4.0, 200.0, 3e4])
    seed = rnd.seed_tensor((5, 6))
    s_gammas = rnd.split(seed, 2)[0]
    (dg,) = grad(fast(lambda k: ps._gammas(d, k, (4,), s_gammas)[0]), f64(kappas))
    g_a, g_b = map(numpy, fast(lambda k: ps._gammas(d, k, (4,), s_gammas))(f64(kappas)))
    alpha = (d - 1) / 2 + kappas
    u = special.gammainc(alpha, g_a)
    h = 1e-6 * alpha
    fd = (special.gammaincinv(alpha + h, u) - special.gammaincinv(alpha - h, u)) / (2 * h)
    np.testing.assert_allclose(dg, fd, rtol=1e-6)
    mu = np.tile(np.eye(d, dtype="float32")[1:2], (4, 1))
    (dt,) = grad(fast(lambda k: ps._sample(mu, k, seed)[:, 1]), f64(kappas))
    np.testing.assert_allclose(dt, 2 * g_b / (g_a + g_b) ** 2 * fd, rtol=1e-5)
    n, k = 20000, 5.0
    mu = np.tile(np.eye(d, dtype="float32")[1:2], (n, 1))
    (per_row,) = grad(fast(lambda k: ps._sample(mu, k, seed)[:, 1]), f64(np.full(n, k)))
    se = per_row.std() / math.sqrt(n)
    assert abs(per_row.mean() - (d - 1) / (d - 1 + k) ** 2) < 3 * se


def test_mean_direction_gradient_against_finite_differences():
    """The Householder turn is smooth in mu on each side of mu_1 = 0 (float64 here):
    its Jacobian-vector products against central differences, and the turned point has
    <x, mu> = t, |x| = 1."""
    rng = np.random.default_rng(2)
    for mu in (np.array([0.3, -1.0, 2.0, 0.5]), np.array([-0.8, 0.1, 0.1, -0.2]),
               np.array([1.0, 1e-9, 0.0, 0.0])):
        mu = mu / np.linalg.norm(mu)
        t, rest = np.array([0.3]), rng.normal(size=3)
        rest *= math.sqrt(1 - 0.09) / np.linalg.norm(rest)
        x = numpy(ps._turn_to(f64(mu), f64(t), f64(rest)))
        np.testing.assert_allclose([x @ mu, x @ x], [0.3, 1.0], rtol=0, atol=4 * EPS)
        direction = rng.normal(size=4)
        weights = rng.normal(size=4)

        def f(m, t=t, rest=rest, weights=weights):
            return ps._turn_to(m, f64(t), f64(rest)) * weights

        (g,) = grad(f, f64(mu))
        h = 1e-6
        fd = (numpy(f(f64(mu + h * direction))).sum() - numpy(f(f64(mu - h * direction))).sum()) / (2 * h)
        np.testing.assert_allclose(g @ direction, fd, rtol=1e-7, atol=1e-9)


def test_kl_is_added_per_example_and_learned_kappa_reaches_the_optimum():
    """Loss = w |z - mu|^2 + KL, expected 2 w (1 - k / (d - 1 + k)) + KL(k): its minimiser
    (scipy, with the KL by integration) is where the learned kappa ends."""
    from scipy.optimize import minimize_scalar

    layer = PowerSpherical(kappa=None, seed=0)
    layer([X, KAPPAS], training=True)
    want = np.mean([kl_by_integration(5, float(k)) for k in KAPPAS.astype("float64")])
    np.testing.assert_allclose(float(layer.losses[-1]), want, rtol=1e-6)
    d, w = 5, 5.0
    best = math.exp(minimize_scalar(
        lambda lk: 2 * w * (1 - math.exp(lk) / (d - 1 + math.exp(lk))) + kl_by_integration(d, math.exp(lk)),
        bounds=(0.0, 5.0), method="bounded", options={"xatol": 1e-4}).x)
    inputs = keras.Input((d,))
    layer = PowerSpherical(kappa=1.0, learn_kappa=True, seed=0)
    model = keras.Model(inputs, layer(inputs))
    target = X / np.linalg.norm(X, axis=1, keepdims=True)
    model.compile(keras.optimizers.Adam(0.05),
                  loss=lambda y, p: w * keras.ops.sum(keras.ops.square(y - p), axis=-1))
    model.fit(np.repeat(X, 512, 0), np.repeat(target, 512, 0), epochs=12, batch_size=256, verbose=0)
    learned = float(keras.ops.exp(layer.log_kappa))
    assert abs(math.log(learned / best)) < 0.1, (learned, best)


def test_bad_arguments_and_log_prob_inputs():
    with pytest.raises(ValueError, match="kappa=0"):
        PowerSpherical(kappa=0)
    with pytest.raises(ValueError, match="kappa=None, learn_kappa=True"):
        PowerSpherical(kappa=None, learn_kappa=True)
    with pytest.raises(ValueError, match="d >= 2"):
        PowerSpherical(kappa=1.0)(np.ones((2, 1), "float32"))
    good = np.array([[0.0, 1.0, 0.0]])
    for name, x, mu, k in [("x", [[np.nan, 1.0, 0.0]], good, 1.0), ("x", [[0.0, 0.0, 0.0]], good, 1.0),
                           ("mean_direction", good, [[np.inf, 0.0, 0.0]], 1.0),
                           ("mean_direction", good, [[0.0, 0.0, 0.0]], 1.0),
                           ("kappa", good, good, 0.0), ("kappa", good, good, np.nan),
                           ("kappa", good, good, [-1.0])]:
        with pytest.raises(ValueError, match=name):
            power_spherical_log_prob(np.asarray(x), np.asarray(mu), k)
    with pytest.raises(ValueError, match="same last dimension"):
        power_spherical_log_prob(np.ones((2, 3)), np.ones((2, 4)), 1.0)
    with pytest.raises(ValueError, match="kappa"):
        power_spherical_kl_to_uniform(3, -1.0)
