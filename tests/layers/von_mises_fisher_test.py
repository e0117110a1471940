import re

import keras
import numpy as np
import pytest

from keras_space.layers import PowerSpherical, VonMisesFisher
from keras_space.ops import vmf_kl_to_uniform, vmf_mean_resultant_length
from keras_space.testing import check_masking, run_layer_contract
from tests.backend import (
    BACKEND,
    compiled,
    numpy,
    runtime_errors,
    value_and_variable_grads,
)
from tests.backend import grad as grad_of
from tests.layers.power_spherical_test import kl_by_integration
from tests.ops.vmf_test import (
    exact_cdf,
    inverse_cdf_reference,
    ref_a,
    ref_a_prime,
    ref_kl,
)

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

X = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
KAPPAS = np.array([1e-3, 0.5, 1.99, 2.01, 10.0, 300.0, 1e4, 1e5], "float32")  # one per row


@pytest.mark.parametrize(
    "kwargs, data",
    [
        ({"kappa": 20.0, "seed": 1}, X),
        ({"kappa": 5.0, "learn_kappa": True, "seed": 2}, X),
        ({"kappa": 50.0, "sampler": "wood", "seed": 3}, X),
        ({"kappa": None, "seed": 4}, [X, KAPPAS[:, None]]),
    ],
    ids=["table", "learned", "wood", "per_example"],
)
def test_layer_contract(kwargs, data, saved_model_once):
    run_layer_contract(VonMisesFisher, kwargs, input_data=data, expected_output_shape=(8, 5),
                       run_saved_model=saved_model_once)


def test_training_samples_on_the_sphere_around_mu():
    layer = VonMisesFisher(kappa=100.0, seed=0)
    x = np.repeat(X[:1], 4000, axis=0)
    z = np.asarray(layer(x, training=True), dtype="float64")
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    mu = X[0] / np.linalg.norm(X[0])
    w = z @ mu
    se = w.std() / np.sqrt(len(w))
    assert abs(w.mean() - float(vmf_mean_resultant_length(5, 100.0))) < 3 * se + 1e-6
    # the orthogonal part is isotropic: its mean vanishes
    orth = z - w[:, None] * mu[None, :]
    assert np.abs(orth.mean(0)).max() < 4 * orth.std(0).max() / np.sqrt(len(w))


def test_inference_returns_the_mean_direction_and_zero_vectors_are_safe():
    layer = VonMisesFisher(kappa=10.0)
    out = np.asarray(layer(X))
    np.testing.assert_allclose(out, X / np.linalg.norm(X, axis=1, keepdims=True), rtol=1e-6)
    zero = np.asarray(layer(np.zeros((2, 5), "float32"), training=True))
    assert np.all(np.isfinite(zero))
    np.testing.assert_allclose(np.linalg.norm(zero, axis=1), 1.0, rtol=1e-6)
    sampled = VonMisesFisher(kappa=10.0, sample_in_inference=True, seed=0)(X)
    assert not np.allclose(np.asarray(sampled), out)


def test_kl_is_added_as_loss_and_metric():
    inputs = keras.Input((5,))
    z = VonMisesFisher(kappa=30.0, seed=0)(keras.layers.Dense(5)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(5)(z))
    model.compile("adam", "mse")
    history = model.fit(X, X, epochs=2, verbose=0)
    kl = float(vmf_kl_to_uniform(5, 30.0))
    if BACKEND == "jax":  # Keras's JAX trainer holds no layer metric state: no metric
        assert "kl" not in history.history and model.layers[2].kl_metric is None
    else:
        np.testing.assert_allclose(history.history["kl"], [kl, kl], rtol=1e-5)
    model(X, training=True)
    np.testing.assert_allclose(float(sum(model.losses)), kl, rtol=1e-5)


def test_learned_kappa_gets_the_gradient_of_the_objective():
    """d/dkappa E[<z, mu>] = A_d'(kappa): the layer's gradient estimate matches it."""
    layer = VonMisesFisher(kappa=8.0, learn_kappa=True, seed=0)
    x = np.repeat(X[:1], 20000, axis=0)
    layer.build(x.shape)
    mu = keras.ops.convert_to_tensor(X[:1] / np.linalg.norm(X[:1]), "float32")

    def objective():
        z = layer(x, training=True)
        return keras.ops.sum(keras.ops.cast(z, "float32") * mu) / len(x)

    _, (grad,) = value_and_variable_grads(objective, [layer.log_kappa])
    d, k = 5, 8.0
    a = float(vmf_mean_resultant_length(d, k))
    want = k * (1 - a * a - (d - 1) * a / k)  # d/dlog(kappa) = kappa A'
    assert abs(float(grad) - want) < 0.05 * abs(want), (float(grad), want)


@pytest.mark.slow
def test_learned_kappa_reaches_the_analytic_optimum():
    """Loss = weight * mean((z - mu)^2) + KL. E||z - mu||^2 = 2 (1 - A_d), so the
    optimum kappa minimises weight * 2 (1 - A_d(kappa)) / d + KL(kappa): found
    here with mpmath and scipy, independently of the layer."""
    import mpmath as mp
    from scipy.optimize import minimize_scalar

    d, weight = 5, 20.0

    def objective(log_k):
        k = mp.e ** log_k
        a = mp.besseli(d / 2, k) / mp.besseli(d / 2 - 1, k)
        log_c = (d / 2 - 1) * mp.log(k) - (d / 2) * mp.log(2 * mp.pi) - mp.log(mp.besseli(d / 2 - 1, k))
        log_area = mp.log(2) + (d / 2) * mp.log(mp.pi) - mp.loggamma(d / 2)
        return float(weight * 2 * (1 - a) / d + k * a + log_c + log_area)

    best = float(np.exp(minimize_scalar(objective, bounds=(-3, 6), method="bounded").x))
    inputs = keras.Input((d,))
    layer = VonMisesFisher(kappa=1.0, learn_kappa=True, seed=0)
    model = keras.Model(inputs, layer(inputs))
    target = X / np.linalg.norm(X, axis=1, keepdims=True)
    model.compile(
        keras.optimizers.Adam(0.02),
        loss=lambda y, p: weight * keras.ops.mean(keras.ops.square(y - p), axis=-1),
    )
    x = np.repeat(X, 128, 0)
    model.fit(x, np.repeat(target, 128, 0), epochs=40, batch_size=256, verbose=0)
    learned = float(np.exp(layer.log_kappa.numpy()))
    assert abs(np.log(learned / best)) < 0.1, (learned, best)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kappa=0"):
        VonMisesFisher(kappa=0)
    with pytest.raises(ValueError, match="sampler='rejection'"):
        VonMisesFisher(kappa=1.0, sampler="rejection")
    with pytest.raises(ValueError, match="learn_kappa=True"):
        VonMisesFisher(kappa=1.0, learn_kappa=True, sampler="table")
    with pytest.raises(ValueError, match="d >= 2"):
        VonMisesFisher(kappa=1.0)(np.ones((2, 1), "float32"))
    with pytest.raises(ValueError, match=r"sampler='closed_form'.*\(2, 4\)"):
        VonMisesFisher(kappa=1.0, sampler="closed_form")(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError, match="kappa=None, learn_kappa=True"):
        VonMisesFisher(kappa=None, learn_kappa=True)
    with pytest.raises(ValueError, match="sampler='table', kappa=None"):
        VonMisesFisher(kappa=None, sampler="table")
    with pytest.raises(ValueError, match=r"kappa=1.0\) takes the mean direction alone.*list of 2 inputs"):
        VonMisesFisher(kappa=1.0)([X, KAPPAS])


def _kappa_rows(error, match):
    """Bad per-example kappas for a (8, 5) mean direction: (value, error, message)."""
    bad_values = [np.where(np.arange(8) == 3, v, KAPPAS).astype("float32")
                  for v in (np.nan, np.inf, -np.inf, 0.0, -1.0)]
    shapes = [KAPPAS[:3], np.ones((8, 2), "float32"), np.ones((8, 1, 1), "float32"),
              np.float32(2.0)]
    return ([(k, error, match) for k in bad_values]
            + [(k, ValueError, r"kappa input has one value per example.*\(8,\).*Received: kappa "
                + re.escape(f"with shape {k.shape}")) for k in shapes])


@pytest.mark.parametrize("how", ["eager", "compiled"])
@pytest.mark.parametrize("cls", [VonMisesFisher, PowerSpherical])
def test_per_example_kappa_bad_inputs_are_named(cls, how):
    layer = cls(kappa=None, seed=0)
    layer([X, KAPPAS])
    for training in (False, True):  # checked in inference too: a broken kappa head shows
        call = lambda x, k, training=training: layer([x, k], training=training)  # noqa: E731
        if how == "compiled":  # one trace for every bad value; shapes are refused when traced
            call = compiled(call)
        for kappa, error, match in _kappa_rows(
                ValueError if how == "eager" else runtime_errors(), "`kappa` must hold positive"):
            if how == "compiled" and error is ValueError:
                continue
            with pytest.raises(error, match=match):
                call(X, kappa)
    with pytest.raises(ValueError, match="expects 2 input"):
        layer(X)
    with pytest.raises(ValueError, match=r"the list \[mean_direction, kappa\].*one input"):
        cls(kappa=None)(X)
    with pytest.raises(ValueError, match="no kappa of its own"):
        layer.kl_divergence()


@pytest.mark.parametrize("learn_kappa", [False, True])
def test_d3_uses_the_closed_form_and_no_table(learn_kappa):
    """d = 3: "auto" is the exact inverse CDF (no table weight, no loop); samples are
    unit vectors with E<z, mu> = A_3 = coth(kappa) - 1/kappa; the learned kappa gets
    the exact gradient d E<z, mu> / d log kappa = kappa A_3'."""
    k = 4.0
    layer = VonMisesFisher(kappa=k, learn_kappa=learn_kappa, seed=0)
    x = np.repeat(np.array([[1.0, 2.0, -2.0]], "float32"), 20000, axis=0)
    layer.build(x.shape)
    assert layer._resolved_sampler() == "closed_form"
    assert [w.name for w in layer.weights] == (["log_kappa"] if learn_kappa else [])
    mu = keras.ops.convert_to_tensor(x[:1] / 3.0)

    def objective():
        z = layer(x, training=True)
        return keras.ops.sum(z * mu) / len(x), z

    variables = [layer.log_kappa] if learn_kappa else []
    (objective, z), grads = value_and_variable_grads(objective, variables)
    z = numpy(z)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    a = 1 / np.tanh(k) - 1 / k
    se = float(np.std(z @ (x[0] / 3.0))) / np.sqrt(len(x))
    assert abs(float(objective) - a) < 3 * se
    if learn_kappa:
        want = k * (1 / k**2 - 1 / np.sinh(k) ** 2)  # kappa A_3'(kappa)
        (grad,) = grads
        assert abs(float(grad) - want) < 0.05 * abs(want), (float(grad), want)


def test_mean_direction_of_extreme_and_non_finite_inputs():
    layer = VonMisesFisher(kappa=10.0)
    huge = np.array([[1e30, 2e30, 3e30]], "float32")
    np.testing.assert_allclose(layer(huge), huge / np.linalg.norm(huge.astype("float64")), rtol=1e-6)
    tiny = np.array([[0.0, -1e-30, 0.0]], "float64")
    np.testing.assert_array_equal(np.asarray(layer(tiny)), [[0.0, -1.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(layer(np.zeros((1, 3), "float32"))), [[1.0, 0.0, 0.0]])
    bad = np.array([[np.nan, 1.0, 0.0], [1.0, np.inf, 0.0], [3.0, 4.0, 0.0]], "float32")
    out = np.asarray(layer(bad))
    assert np.all(np.isnan(out[:2])) and np.allclose(out[2], [0.6, 0.8, 0.0])
    sampled = np.asarray(layer(bad, training=True))
    assert np.all(np.isnan(sampled[:2])) and np.isclose(np.linalg.norm(sampled[2]), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mean_direction_gradient_at_zero_tiny_and_huge_rows(dtype):
    """d(x/|x|)/dx = (I - u u^T)/|x| (numpy, float64) for every non-zero row, 0 at a zero
    row; a zero or tiny row never poisons the other rows (it gave NaN: issue 30)."""
    layer = VonMisesFisher(kappa=10.0)
    layer.build((None, 3))
    rows = np.array([[0.0, 0.0, 0.0], [3e-30, -4e-30, 1e-30], [0.3, -1.2, 2.0],
                     [1e30, 2e30, -2e30], [1e-20, 0.0, 0.0]])
    weights = np.random.default_rng(0).normal(size=rows.shape)
    for batch in (rows, rows[2:3]):  # mixed rows, and a batch of plain rows only
        x = keras.ops.convert_to_tensor(batch, dtype)
        (grad,) = grad_of(lambda x: keras.ops.cast(layer.mean_direction(x), "float64")
                          * weights[:len(x)], x)
        grad = grad.astype("float64")
        assert np.all(np.isfinite(grad))
        for i, row in enumerate(np.asarray(x, "float64")):
            norm = np.linalg.norm(row / np.abs(row).max()) * np.abs(row).max() if row.any() else 0
            if norm == 0:
                np.testing.assert_array_equal(grad[i], 0.0)
                continue
            u = row / norm
            want = (weights[i] - u * (u @ weights[i])) / norm
            # float32: the direction is exact to ~1e-7, so is its Jacobian
            np.testing.assert_allclose(grad[i], want, rtol=1e-5 if dtype == "float32" else 1e-12,
                                       atol=1e-5 * np.abs(want).max())


def test_one_fit_step_with_an_all_zero_row_keeps_every_weight_finite():
    """A ReLU encoder meets zero rows in real training (20 weights went NaN)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu"),
                              VonMisesFisher(10.0), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    dense = model.layers[0]
    dense.set_weights([np.ones((4, 5), "float32"), np.zeros(5, "float32")])
    x = np.array([[-1.0, -1.0, -1.0, -1.0], [1.0, 2.0, 0.5, 0.1]], "float32")  # row 0 -> 0
    model.fit(x, np.ones((2, 1)), epochs=1, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_vmf_table_stays_float64_under_autocast():
    from keras.src.backend import AutocastScope  # what Keras opens around model calls

    layer = VonMisesFisher(kappa=10.0)
    layer(np.ones((2, 5), "float32"))  # d = 3 has no table (closed form)
    with AutocastScope("float16"):
        assert keras.ops.convert_to_tensor(layer.inverse_cdf).dtype == "float64"


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("d", [3, 16])  # the closed form's autodiff, Wood's implicit gradient
def test_per_example_kappa_kl_and_sample_gradient_per_row(d):
    """Each row's KL against mpmath (the layer's loss is their mean); each row's
    sample w_i = <z_i, mu_i> moves with its own kappa_i, at the rate of the
    exact inverse CDF at that sample's CDF value (finite differences of scipy's
    quadrature and root finding, independent of the layer)."""
    rng = np.random.default_rng(d)
    kappas = np.array([0.5, 5.0, 50.0, 500.0])
    mu = rng.normal(size=(4, d)).astype("float32")
    unit = mu / np.linalg.norm(mu, axis=1, keepdims=True)
    layers = []

    def w_of(k):  # a fresh layer each time: the same seed, the same sample
        layers.append(VonMisesFisher(kappa=None, seed=7))
        return keras.ops.sum(layers[-1]([mu, k], training=True) * unit, axis=-1)

    w = numpy(w_of(kappas)).astype("float64")
    layer = layers[0]
    np.testing.assert_allclose(float(layer.losses[-1]), np.mean([ref_kl(d, k) for k in kappas]),
                               rtol=1e-6)
    np.testing.assert_allclose(numpy(layer.kl_divergence(KAPPAS)), [ref_kl(d, k) for k in KAPPAS],
                               rtol=1e-9)
    (g,) = grad_of(w_of, kappas)  # d(sum_i w_i)/dkappa_j: row j's own derivative alone,
    for i, k in enumerate(kappas):  # or it would not match the reference of w_j alone
        u = exact_cdf(d, k)(w[i])[0]
        h = 1e-4 * k
        fd = (inverse_cdf_reference(d, k + h, u) - inverse_cdf_reference(d, k - h, u)) / (2 * h)
        # w_i is float32 (its CDF value is off by p(w) * 6e-8): the derivative at that
        # u differs by d^2w/(du dk) * that, far below 1e-4 of it here
        np.testing.assert_allclose(g[i], fd, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("d", [3, 16])
def test_per_example_kappa_mean_and_gradient_match_mpmath(d):
    """Rows with different kappas in one batch: each group's E[w] is A_d(kappa) and its
    mean sample gradient is A_d'(kappa) (mpmath), within 3 standard errors."""
    n = 6000
    kappas = np.repeat([0.3, 4.0, 100.0], n)
    mu = np.tile(np.eye(d, dtype="float32")[:1], (len(kappas), 1))
    layer = VonMisesFisher(kappa=None, seed=11)
    w_sum = lambda k: keras.ops.sum(layer([mu, k], training=True)[:, 0])  # noqa: E731
    (g,) = grad_of(w_sum, kappas)
    w = numpy(layer([mu, kappas], training=True))[:, 0]
    for j, k in enumerate((0.3, 4.0, 100.0)):
        rows = slice(j * n, (j + 1) * n)
        for values, want in ((w[rows], ref_a(d, k)), (g[rows], float(ref_a_prime(d, k)))):
            se = values.std() / np.sqrt(n)
            assert abs(values.mean() - want) < 3 * se + 1e-7, (d, k, values.mean(), want, se)


@pytest.mark.parametrize("cls", [VonMisesFisher, PowerSpherical])
def test_padded_positions_are_not_read(cls):
    """(batch, sequence, d) latents with padding: NaN mean directions and kappas at padded
    positions change nothing at real ones (outputs, the per-example KL: the mean over
    real positions, against mpmath), padded outputs are 0, gradients stay finite; a
    padding_mask on a (batch, d) input is refused."""
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2, 4, 5)).astype("float32")
    kappa = rng.uniform(1.0, 50.0, size=(2, 4)).astype("float32")
    mask = np.array([[True, True, False, False], [True, True, True, False]])
    dirty_mu, dirty_kappa = mu.copy(), kappa.copy()
    dirty_mu[~mask], dirty_kappa[~mask] = np.nan, np.nan
    check_masking(cls(kappa=None, seed=5), [mu, kappa], mask)  # the contract's clause
    outs, kls = [], []
    for m, k in ((mu, kappa), (dirty_mu, dirty_kappa)):
        layer = cls(kappa=None, seed=5)
        outs.append(numpy(layer([m, k], training=True, padding_mask=mask)))
        kls.append(float(layer.losses[-1]))
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[1][~mask], 0.0)
    np.testing.assert_allclose(np.linalg.norm(outs[1][mask], axis=-1), 1.0, rtol=1e-6)
    ref = ref_kl if cls is VonMisesFisher else kl_by_integration
    np.testing.assert_allclose(kls[1], np.mean([ref(5, float(k)) for k in kappa[mask]]), rtol=1e-6)
    layer = cls(kappa=None, seed=5)
    (g_mu, g_kappa) = grad_of(lambda m, k: layer([m, k], training=True, padding_mask=mask),
                              keras.ops.convert_to_tensor(dirty_mu), keras.ops.convert_to_tensor(dirty_kappa))
    assert np.all(np.isfinite(g_mu)) and np.all(np.isfinite(g_kappa))
    assert np.all(g_mu[~mask] == 0) and np.all(g_kappa[~mask] == 0)
    with pytest.raises(ValueError, match=r"padding_mask.*\(batch, sequence, d\).*\(8, 5\)"):
        cls(kappa=10.0)(X, padding_mask=np.ones(8, bool))
