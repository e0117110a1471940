"""WhiteningLayer against sklearn PCA(whiten=True) and numpy; streaming; contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data input to adapt: Keras takes it on every backend
from sklearn.decomposition import PCA

from keras_space.layers import WhiteningLayer
from keras_space.testing import run_layer_contract
from tests.backend import compiled

pytestmark = pytest.mark.all_backends


def correlated(n=3000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.geomspace(3.0, 0.1, d)[None, :]
    return (rng.normal(size=(n, d)) @ mix.T + rng.normal(size=d) * 5).astype("float32")


X = correlated()


@pytest.mark.parametrize("k", [None, 8])
def test_matches_sklearn_pca_whiten_up_to_sign(k):
    layer = WhiteningLayer(n_components=k)
    layer.adapt(X)
    ours = np.asarray(layer(X), dtype="float64")
    ref = PCA(n_components=k or X.shape[1], whiten=True, svd_solver="full").fit(
        X.astype("float64")
    ).transform(X.astype("float64"))
    signs = np.sign(np.sum(ours * ref, axis=0))
    np.testing.assert_allclose(ours * signs, ref, atol=1e-4)
    np.testing.assert_allclose(np.cov(ours.T), np.eye(ours.shape[1]), atol=1e-4)


def test_eigenvalues_sorted_and_equal_numpy():
    layer = WhiteningLayer()
    layer.adapt(X)
    x = X.astype("float64")
    want = np.sort(np.linalg.eigvalsh(np.cov(x.T)))[::-1]
    # Weyl: |d lambda_i| <= ||dC||_2. Each covariance entry is a sum of n products,
    # rounded in any order: |dC_jk| <= gamma_n sum_i |xc_ij xc_ik| / (n - 1) (Higham,
    # 3.1), for ours and for numpy's; plus each eigensolver's d * eps * ||C||.
    n, d = x.shape
    eps = np.finfo("float64").eps
    xc = np.abs(x - x.mean(0))
    gamma = (n + 2) * eps / (1 - (n + 2) * eps)  # + the centring's and the scaling's roundings
    bound = 2 * (gamma * np.linalg.norm(xc.T @ xc / (n - 1)) + d * eps * want[0])
    np.testing.assert_allclose(layer.eigenvalues, want, rtol=0, atol=bound)
    assert bound < 1e-9 * want[0]  # every eigenvalue to 1e-9 of the largest


def test_streaming_adapt_equals_one_shot():
    one = WhiteningLayer(n_components=10)
    one.adapt(X)
    streamed = WhiteningLayer(n_components=10)
    streamed.adapt(X, batch_size=77)
    ds = WhiteningLayer(n_components=10)
    ds.adapt(tf.data.Dataset.from_tensor_slices(X).batch(500))
    tensor = WhiteningLayer(n_components=10)
    tensor.adapt(keras.ops.convert_to_tensor(X), batch_size=1000)
    for other in (streamed, ds, tensor):
        np.testing.assert_allclose(other.mean, one.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(other.kernel, one.kernel, rtol=1e-5, atol=1e-6)


def test_steps_limits_the_data():
    part = WhiteningLayer()
    part.adapt(X, batch_size=1000, steps=2)
    np.testing.assert_allclose(part.mean, X[:2000].astype("float64").mean(0), rtol=1e-5, atol=1e-5)


def test_rotation_only_preserves_cosines():
    layer = WhiteningLayer(beta=0.0, gamma=0.0)
    layer.adapt(X)
    y = np.asarray(layer(X), dtype="float64")
    x = X.astype("float64")

    def cos(a):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a[:200] @ a[:200].T

    np.testing.assert_allclose(cos(y), cos(x), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)


def test_beta_gamma_formula_against_numpy():
    layer = WhiteningLayer(n_components=6, beta=0.5, gamma=0.5)
    layer.adapt(X)
    x = X.astype("float64")
    mu = x.mean(0)
    lam, u = np.linalg.eigh(np.cov(x.T))
    lam, u = lam[::-1][:6], u[:, ::-1][:, :6]
    want = (x - 0.5 * mu) @ u @ np.diag(lam ** -0.25)
    got = np.asarray(layer(X), dtype="float64")
    signs = np.sign(np.sum(got * want, axis=0))
    np.testing.assert_allclose(got * signs, want, rtol=1e-4, atol=1e-3)


def test_zca_is_symmetric_whitening():
    layer = WhiteningLayer(mode="zca")
    layer.adapt(X)
    w = np.asarray(layer.kernel, dtype="float64")
    np.testing.assert_allclose(w, w.T, atol=1e-4)
    y = np.asarray(layer(X), dtype="float64")
    np.testing.assert_allclose(np.cov(y.T), np.eye(X.shape[1]), atol=1e-3)


def test_rank_cap_and_errors():
    low_rank = (np.random.default_rng(0).normal(size=(500, 5)) @ np.random.default_rng(1).normal(size=(5, 12))).astype("float32")
    layer = WhiteningLayer()
    with pytest.warns(UserWarning, match="exceeds the rank 5"):
        layer.adapt(low_rank)
    assert layer.n_components == 5 and layer(low_rank).shape == (500, 5)
    built = WhiteningLayer(n_components=8)
    built.build((None, 12))
    with pytest.raises(ValueError, match="n_components <= 5"):
        built.adapt(low_rank)
    bad = X.copy()
    bad[[3, 10, 11]] = np.nan
    bad[20, 0] = np.inf
    with pytest.raises(ValueError, match="4 rows with NaN or inf"):
        WhiteningLayer().adapt(bad)
    with pytest.raises(ValueError, match="4 rows with NaN or inf"):  # a NaN in the first batch too
        WhiteningLayer().adapt(bad, batch_size=4)
    with pytest.raises(ValueError, match="squares overflow float64"):
        WhiteningLayer().adapt(X.astype("float64") * 1e160)
    with pytest.raises(ValueError, match="adapt"):
        WhiteningLayer()(X)
    with pytest.raises(ValueError, match="n_components=0"):
        WhiteningLayer(n_components=0)
    with pytest.raises(ValueError, match="mode='pcaa'"):
        WhiteningLayer(mode="pcaa")
    with pytest.raises(ValueError, match="epsilon=-1"):
        WhiteningLayer(epsilon=-1)


def test_model_built_before_adapt():
    inputs = keras.Input((X.shape[1],))
    layer = WhiteningLayer(n_components=4)
    model = keras.Model(inputs, layer(inputs))
    layer.adapt(X)
    assert model.predict(X[:10], verbose=0).shape == (10, 4)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_components": 5}, {"beta": 0.0, "gamma": 0.0}, {"mode": "zca", "n_components": 6}],
)
def test_layer_contract(kwargs, saved_model_once):
    run_layer_contract(
        WhiteningLayer,
        kwargs,
        run_saved_model=saved_model_once,
        input_data=X[:8],
        expected_output_shape=(8, kwargs.get("n_components", 24) if kwargs.get("mode") != "zca" else 24),
        setup=lambda layer: layer.adapt(X),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_direct_calls_under_a_mixed_policy_keep_float64_statistics(policy):
    keras.config.set_dtype_policy(policy)
    layer = WhiteningLayer(n_components=6)
    layer.adapt(X)
    assert all(w.dtype == "float64" for w in layer.weights)
    mean = X.astype("float64").mean(0)
    eigenvalues, vectors = np.linalg.eigh(np.cov(X.astype("float64"), rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:6]
    want = (X[:5] - mean) @ (vectors[:, order] / np.sqrt(eigenvalues[order]))
    for call in (layer, compiled(layer)):
        got = np.asarray(call(X[:5]), dtype="float64")
        assert keras.backend.standardize_dtype(call(X[:5]).dtype) == policy.split("_")[1]
        np.testing.assert_allclose(np.abs(got), np.abs(want), rtol=2e-2, atol=2e-2)



@pytest.mark.parametrize("data", [np.ones((100, 8)), X[:100] * 1e-200, np.zeros((5, 3))])
def test_degenerate_statistics_raise_at_adapt(data):
    with pytest.raises(ValueError, match="no variance \\(rank 0"):
        WhiteningLayer().adapt(data)


def test_saved_before_adapt_reloads_unadapted(tmp_path):
    model = keras.Sequential([keras.Input((24,)), WhiteningLayer(n_components=4)])
    model.save(tmp_path / "unadapted.keras")
    loaded = keras.saving.load_model(tmp_path / "unadapted.keras")
    assert not loaded.layers[0].adapted
    with pytest.raises(ValueError, match="no statistics yet"):
        loaded.predict(X[:2], verbose=0)


def test_a_second_adapt_replaces_the_statistics():
    other = correlated(seed=5)
    layer = WhiteningLayer(n_components=5)
    layer.adapt(X)
    layer.adapt(other)
    fresh = WhiteningLayer(n_components=5)
    fresh.adapt(other)
    np.testing.assert_allclose(layer(other[:10]), fresh(other[:10]), rtol=1e-6, atol=1e-6)
