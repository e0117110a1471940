"""VonMisesFisherNLL against mpmath (value and kappa-gradient), the analytic gradient in
the mean direction, continuity across the log normaliser's switch (kappa = 2), bad inputs."""

import functools

import keras
import mpmath as mp
import numpy as np
import pytest

from keras_space.losses import VonMisesFisherNLL
from tests.backend import compiled, f64, gradient_function, numpy, runtime_errors

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)
mp.mp.dps = 40
# the grids run compiled on JAX (which compiles each eager op apart: one program per d
# instead), eagerly on TensorFlow (which runs them faster than it traces them)
fast = compiled if keras.backend.backend() == "jax" else (lambda fn: fn)

DIMS = [2, 3, 16, 128, 768, 4096]
KAPPAS = [1e-3, 0.5, 2.0 - 1e-9, 2.0, 10.0, 1e3, 1e5]
COSINES = [1.0, 1.0 - 1e-9, 0.9, 0.0, -1.0]


def pair(d, cosine, rng):
    """A unit target x and an unnormalised mean direction at the given cosine."""
    x = rng.normal(size=d)
    x /= np.linalg.norm(x)
    other = rng.normal(size=d)
    other -= other @ x * x
    other /= np.linalg.norm(other)
    mu = cosine * x + np.sqrt(max(0.0, 1 - cosine * cosine)) * other
    return x, 3.0 * mu  # any length


@functools.cache
def normaliser(d, k):
    """(log I_v(kappa) e^-kappa, log C_d(kappa) + kappa, A_d(kappa)) in mpmath, v = d/2 - 1."""
    k, v = mp.mpf(k), mp.mpf(d) / 2 - 1
    log_ive = mp.log(mp.besseli(v, k)) - k
    return log_ive, v * mp.log(k) - (v + 1) * mp.log(2 * mp.pi) - log_ive, mp.besseli(v + 1, k) / mp.besseli(v, k)


def reference(d, x, mu, k):
    """(nll, d nll / d kappa, the scale of the terms) in mpmath from the float64 inputs."""
    x, mu = [mp.matrix([mp.mpf(float(v)) for v in row]) for row in (x, mu)]
    c = sum(x[i] * mu[i] for i in range(d)) / (mp.norm(x) * mp.norm(mu))
    log_ive, log_c_plus_k, a = normaliser(d, float(k))
    k = mp.mpf(float(k))
    scale = k * (1 - c) + abs((mp.mpf(d) / 2 - 1) * mp.log(k)) + (d / 2) * mp.log(2 * mp.pi) + abs(log_ive)
    return float(k * (1 - c) - log_c_plus_k), float(a - c), float(scale)


def curvature(d, k):
    """d^2 nll / d kappa^2 = A_d'(kappa) = 1 - A^2 - (d - 1) A / kappa (mpmath)."""
    a = normaliser(d, k)[2]
    return float(1 - a**2 - (d - 1) * a / k)


@pytest.mark.parametrize("d", DIMS)
def test_value_and_gradients_against_mpmath_and_the_analytic_gradient(d):
    rng = np.random.default_rng(d)
    rows = [(k, *pair(d, c, rng)) for k in KAPPAS for c in COSINES]
    x = np.array([r[1] for r in rows])
    mu = np.array([r[2] for r in rows])
    kappa = np.array([r[0] for r in rows])
    loss = VonMisesFisherNLL(reduction="none", dtype="float64")

    def per_row(m, k):
        return loss(f64(x), keras.ops.concatenate([m, k[:, None]], axis=1))

    got = numpy(fast(per_row)(f64(mu), f64(kappa)))
    g_mu, g_kappa = map(numpy, fast(gradient_function(per_row))(f64(mu), f64(kappa)))
    for i, (k, xi, mi) in enumerate(rows):
        want, want_dk, scale = reference(d, xi, mi, k)
        # every term of the sum is accurate to a few ulps of its own size (the log
        # normaliser's tests: 1e-15 relative), so the error is below 1e-14 of their sum
        assert abs(got[i] - want) <= 1e-14 * scale, (d, k, got[i], want)
        # 1 - A_d and the half squared distance: absolute errors of a few ulps of 1
        assert abs(g_kappa[i] - want_dk) <= 1e-13, (d, k, g_kappa[i], want_dk)
        # d / d mu of -kappa <x, mu / |mu|> = -kappa (I - u u^T) x / |mu|
        u = mi / np.linalg.norm(mi)
        want_mu = -k * (xi - (u @ xi) * u) / np.linalg.norm(mi)
        np.testing.assert_allclose(g_mu[i], want_mu, rtol=0, atol=1e-12 * k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_value_and_kappa_gradient_are_continuous_across_the_switch(dtype):
    """kappa walks across 2, where the log normaliser switches from its power series to
    the Bessel function: each step changes the value and the gradient by their slopes
    times the step, plus rounding only (no jump)."""
    loss = VonMisesFisherNLL(reduction="none", dtype=dtype)
    if dtype == "float64":
        kappas = 2.0 + 1e-10 * np.arange(-4, 5)
    else:  # 2 and its two nearest float32 neighbours on each side
        kappas = [np.float32(2.0)]
        for _ in range(2):
            kappas = [np.nextafter(kappas[0], np.float32(0)), *kappas, np.nextafter(kappas[-1], np.float32(4))]
        kappas = np.array(kappas, "float32")
    ks = keras.ops.convert_to_tensor(kappas)
    for d in DIMS:
        x, mu = pair(d, 0.3, np.random.default_rng(0))
        xs, mus = (keras.ops.convert_to_tensor(np.tile(v, (len(kappas), 1)).astype(dtype)) for v in (x, mu))

        def per_kappa(k, xs=xs, mus=mus):
            return loss(xs, keras.ops.concatenate([mus, k[:, None]], axis=1))

        values = numpy(fast(per_kappa)(ks)).astype("float64")
        gk = numpy(fast(gradient_function(per_kappa))(ks)[0])
        _, slope, scale = reference(d, x, mu, 2.0)
        bend, ulp = curvature(d, 2.0), np.finfo(dtype).eps
        steps = np.diff(kappas.astype("float64"))
        # Taylor: a step changes the value by slope * step + O(bend * step^2 / 2) (bend is
        # below 1) and the gradient by bend * step. Rounding: in float64 the two branches
        # agree to 1e-14 of the terms' size (1e-13 absolute for the gradient); in float32
        # each value and gradient is computed in float64 and rounded once (half an ulp).
        rounding = 1e-14 * scale if dtype == "float64" else ulp * np.abs(values).max()
        assert np.all(np.abs(np.diff(values) - slope * steps) <= rounding + steps**2), d
        grad_steps = np.diff(gk.astype("float64")) - bend * steps
        assert np.all(np.abs(grad_steps) <= (1e-13 if dtype == "float64" else 2 * ulp)), (d, gk)


def test_compiled_like_a_train_step_and_float32_by_default():
    x, mu = pair(5, 0.5, np.random.default_rng(1))
    pred = np.concatenate([mu, [7.0]])[None]
    loss = VonMisesFisherNLL()
    got = numpy(compiled(lambda a, b: loss(a, b))(keras.ops.convert_to_tensor(x[None], "float32"),
                                                  keras.ops.convert_to_tensor(pred, "float32")))
    assert got.dtype == np.float32
    want, _, scale = reference(5, x.astype("float32"), pred[0, :5].astype("float32"), 7.0)
    assert abs(float(got) - want) <= 2 * np.finfo("float32").eps * scale


GOOD_X = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
GOOD_PRED = np.array([[1.0, 1.0, 0.0, 3.0], [0.0, 2.0, 0.0, 0.5]])


def _with(array, index, value):
    out = array.copy()
    out[index] = value
    return out


@pytest.mark.parametrize("x, pred, match", [
    (GOOD_X, _with(GOOD_PRED, (1, 3), 0.0), "kappa"),
    (GOOD_X, _with(GOOD_PRED, (1, 3), -1.0), "kappa"),
    (GOOD_X, _with(GOOD_PRED, (0, 3), np.nan), "kappa"),
    (GOOD_X, _with(GOOD_PRED, (0, 3), np.inf), "kappa"),
    (_with(GOOD_X, 1, 0.0), GOOD_PRED, "y_true"),
    (_with(GOOD_X, (0, 1), np.nan), GOOD_PRED, "y_true"),
    (GOOD_X, _with(GOOD_PRED, (1, slice(0, 3)), 0.0), r"y_pred\[:, :d\]"),
    (GOOD_X, _with(GOOD_PRED, (0, 2), np.inf), r"y_pred\[:, :d\]"),
    (GOOD_X, GOOD_PRED[:, :3], "width d \\+ 1"),
    (GOOD_X[:, :1], GOOD_PRED[:, :2], "d >= 2"),
    (GOOD_X[None], GOOD_PRED[None], r"\(batch, d\)"),
])
def test_bad_inputs_are_refused_naming_them(x, pred, match):
    with pytest.raises(ValueError, match=match):
        VonMisesFisherNLL(dtype="float64")(f64(x), f64(pred))


def test_bad_kappa_inside_a_compiled_step_raises_at_run_time():
    loss = VonMisesFisherNLL(dtype="float64")
    with pytest.raises(runtime_errors(), match="kappa"):
        numpy(compiled(lambda a, b: loss(a, b))(f64(GOOD_X), f64(_with(GOOD_PRED, (1, 3), -1.0))))


def test_an_empty_batch_gives_what_keras_losses_give_and_no_nan():
    got = numpy(VonMisesFisherNLL()(np.zeros((0, 3)), np.zeros((0, 4))))
    want = numpy(keras.losses.MeanSquaredError()(np.zeros((0, 3)), np.zeros((0, 3))))
    assert got.shape == want.shape and not np.isnan(got).any()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_direct_call_under_a_mixed_policy_is_the_float32_loss(policy):
    """float16 / bfloat16 inputs (here exactly representable) give the float32 value:
    -log(10 / (2 pi (1 - e^-20)))."""
    keras.config.set_dtype_policy(policy)
    low = policy.split("_")[1]
    x = keras.ops.convert_to_tensor([[0.0, 0.0, 1.0]], low)
    pred = keras.ops.convert_to_tensor([[0.0, 0.0, 2.0, 10.0]], low)
    got = VonMisesFisherNLL()(x, pred)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    np.testing.assert_allclose(numpy(got), -np.log(10 / (2 * np.pi * -np.expm1(-20.0))), rtol=1e-6)
