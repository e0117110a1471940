"""Smooth-activation layers: contract, trainable widths, and errors."""

import keras
import numpy as np
import pytest
from scipy import stats

from keras_space import activations as A
from keras_space.layers import (
    SmoothAbs,
    SmoothActivation,
    SmoothLeakyReLU,
    SmoothMax,
    SmoothReLU,
    SmoothSign,
)
from keras_space.testing import run_layer_contract
from tests.backend import value_and_variable_grads

pytestmark = pytest.mark.all_backends

X = np.random.default_rng(0).normal(size=(4, 6)).astype("float32") * 2.0


@keras.saving.register_keras_serializable(package="keras_space_tests")
def hard_tanh(x):
    return keras.ops.clip(x, -1.0, 1.0)


@pytest.mark.parametrize(
    "layer_cls, kwargs",
    [
        (SmoothReLU, {"sigma": 0.5}),
        (SmoothReLU, {"sigma": 0.5, "kernel": "logistic", "trainable_sigma": True, "per_channel": True}),
        (SmoothAbs, {"sigma": 0.3, "trainable_sigma": True}),
        (SmoothSign, {"sigma": 0.3, "kernel": "cauchy", "trainable_sigma": True}),
        (SmoothLeakyReLU, {"alpha": 0.1, "sigma": 0.5}),
        (SmoothLeakyReLU, {"alpha": 0.1, "sigma": 0.5, "per_channel": True, "trainable_sigma": True}),
        (SmoothActivation, {"fn": "step", "sigma": 0.2, "kernel": "logistic"}),
        (SmoothActivation, {"fn": "floor", "sigma": 0.2, "trainable_sigma": True}),
        (SmoothActivation, {"fn": hard_tanh, "sigma": 0.4, "trainable_sigma": True, "num_points": 64}),
    ],
)
def test_layer_contract(layer_cls, kwargs, saved_model_once):
    run_layer_contract(layer_cls, kwargs, input_data=X, expected_output_shape=(4, 6),
                       run_saved_model=saved_model_once)


def test_smooth_max_contract():
    run_layer_contract(
        SmoothMax,
        {"sigma": 0.2, "trainable_sigma": True},
        input_data=[X, X[::-1].copy()],
        expected_output_shape=(4, 6),
    )


def test_layers_compute_the_closed_forms():
    np.testing.assert_allclose(SmoothReLU(sigma=0.5)(X), A.smooth_relu(X, 0.5), rtol=1e-6)
    np.testing.assert_allclose(
        SmoothLeakyReLU(alpha=0.2, sigma=0.5)(X), A.smooth_leaky_relu(X, 0.2, 0.5), rtol=1e-6
    )
    np.testing.assert_allclose(
        SmoothActivation(hard_tanh, sigma=0.4)(X),
        A.mollify(hard_tanh, X, 0.4),
        rtol=1e-6,
    )
    np.testing.assert_allclose(SmoothMax(sigma=0.1)([X, -X]), A.smooth_max(X, -X, 0.1), rtol=1e-6)


def test_trainable_sigma_gradient_matches_finite_difference():
    """d/d log(sigma) of sum(smooth_relu) against a central difference with scipy."""
    layer = SmoothReLU(sigma=0.7, trainable_sigma=True)
    layer.build(X.shape)
    _, (grad,) = value_and_variable_grads(lambda: keras.ops.sum(layer(X)), layer.trainable_weights)

    def total(sigma):
        x64 = X.astype("float64")
        return np.sum(x64 * stats.norm.cdf(x64 / sigma) + sigma * stats.norm.pdf(x64 / sigma))

    eps = 1e-5
    fd = (total(0.7 * np.exp(eps)) - total(0.7 * np.exp(-eps))) / (2 * eps)
    np.testing.assert_allclose(float(grad), fd, rtol=1e-4)


def test_trainable_alpha_gets_gradient_and_learns():
    """SAU's alpha moves towards the slope of the data's negative side."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(512, 1)).astype("float32")
    y = np.where(x > 0, x, 0.3 * x)
    model = keras.Sequential([keras.Input((1,)), SmoothLeakyReLU(alpha=0.01, sigma=0.01)])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    alpha = float(model.layers[0].alpha_weight.numpy())
    assert abs(alpha - 0.3) < 0.02, alpha


def test_per_channel_sigma_shape_and_effect():
    layer = SmoothReLU(sigma=0.5, per_channel=True)
    layer.build((None, 6))
    assert tuple(layer.log_sigma.shape) == (6,)
    layer.log_sigma.assign(np.log(np.linspace(0.1, 1.0, 6)).astype("float32"))
    np.testing.assert_allclose(layer(X), A.smooth_relu(X, np.linspace(0.1, 1.0, 6)), rtol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma=0"):
        SmoothReLU(sigma=0)
    with pytest.raises(ValueError, match="sigma=-1"):
        SmoothActivation("relu", sigma=-1.0)
    with pytest.raises(ValueError, match="kernel='uniform'"):
        SmoothSign(kernel="uniform")
    with pytest.raises(ValueError, match="Cauchy kernel has no mean"):
        SmoothReLU(kernel="cauchy")
    with pytest.raises(ValueError, match="fn='softsign'"):
        SmoothActivation("softsign")
    with pytest.raises(ValueError, match="keras.ops"):
        SmoothActivation(lambda v: np.floor(v))
    with pytest.raises(ValueError, match="alpha=1.5"):
        SmoothLeakyReLU(alpha=1.5)
    with pytest.raises(ValueError, match="list of two"):
        SmoothMax()(X)
    with pytest.raises(ValueError, match="same shape"):
        SmoothMax()([X, X[:, :3]])
