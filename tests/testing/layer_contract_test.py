"""The contract checker must pass good layers and fail each kind of broken one."""

import keras
import numpy as np
import pytest

from keras_space.layers import MaskedMeanPooling
from keras_space.testing import (
    LayerContractError,
    check_config,
    check_keras_save,
    check_masking,
    check_weight_counts,
    run_layer_contract,
)

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

X = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")


@keras.saving.register_keras_serializable(package="contract_test")
class Scale(keras.layers.Layer):
    """A well-behaved toy layer: y = scale * x @ W."""

    def __init__(self, units, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="glorot_uniform"
        )

    def call(self, x):
        return self.scale * keras.ops.matmul(x, self.kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}


@keras.saving.register_keras_serializable(package="contract_test")
class LossyConfig(Scale):
    def get_config(self):
        config = super().get_config()
        del config["scale"]
        return config


@keras.saving.register_keras_serializable(package="contract_test")
class IgnoresConfigValue(Scale):
    """Stores `scale` in the config but reads a different value back."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["scale"] = 1.0
        return cls(**config)


@keras.saving.register_keras_serializable(package="contract_test")
class WrongOutputShape(Scale):
    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units + 1,)


@keras.saving.register_keras_serializable(package="contract_test")
class UnsavedState(Scale):
    """Keeps a random matrix outside the weights: lost on save/load."""

    def build(self, input_shape):
        super().build(input_shape)
        self.noise = keras.ops.convert_to_tensor(
            np.random.normal(size=(self.units,)).astype("float32")
        )

    def call(self, x):
        return super().call(x) + self.noise


@keras.saving.register_keras_serializable(package="contract_test")
class DropsWeightsOnSave(Scale):
    """Writes nothing into the .keras file: loads with fresh random weights."""

    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


@keras.saving.register_keras_serializable(package="contract_test")
class Float16Weights(Scale):
    """Creates its kernel in the compute dtype: breaks mixed precision."""

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer="glorot_uniform",
            dtype=self.compute_dtype,
        )


@keras.saving.register_keras_serializable(package="contract_test")
class Frozen(Scale):
    """Claims a trainable weight but never lets it receive gradient."""

    def call(self, x):
        return self.scale * keras.ops.matmul(x, keras.ops.stop_gradient(self.kernel))


@keras.saving.register_keras_serializable(package="contract_test")
class TwoInputs(keras.layers.Layer):
    def call(self, a, b):
        return a * b

    def compute_output_shape(self, a_shape, b_shape):
        return a_shape


def test_good_layer_passes():
    run_layer_contract(
        Scale, {"units": 3, "scale": 0.5}, input_data=X, expected_output_shape=(4, 3),
        expected_num_trainable_weights=1, expected_num_non_trainable_weights=0,
        expected_num_seed_generators=0,
    )


def test_keras_dense_passes():
    run_layer_contract(
        keras.layers.Dense, {"units": 3}, input_data=X, expected_output_shape=(4, 3)
    )


def test_two_input_layer_passes_a_dict_as_keyword_arguments():
    run_layer_contract(
        TwoInputs, {}, input_data={"a": X, "b": X + 1.0}, expected_output_shape=(4, 5),
        run_saved_model=False,
    )


@pytest.mark.parametrize(
    "layer_cls, clause",
    [
        (LossyConfig, "config"),
        (IgnoresConfigValue, "config"),
        (WrongOutputShape, "symbolic"),
        (UnsavedState, "config"),
        (DropsWeightsOnSave, "keras_save"),
        (Float16Weights, "mixed_precision"),
        (Frozen, "fit"),
    ],
)
def test_broken_layers_fail(layer_cls, clause):
    with pytest.raises(LayerContractError) as info:
        run_layer_contract(
            layer_cls, {"units": 3, "scale": 0.5}, input_data=X, expected_output_shape=(4, 3)
        )
    assert info.value.clause == clause


class Unregistered(Scale):
    pass


def test_unregistered_layer_fails():
    with pytest.raises(LayerContractError) as info:
        run_layer_contract(Unregistered, {"units": 3}, input_data=X)
    assert info.value.clause == "keras_save"


def test_wrong_expected_shape_fails():
    with pytest.raises(LayerContractError, match="shape"):
        run_layer_contract(Scale, {"units": 3}, input_data=X, expected_output_shape=(4, 7))


def test_wrong_expected_dtype_fails():
    with pytest.raises(LayerContractError, match="dtype"):
        run_layer_contract(
            Scale, {"units": 3}, input_data=X, expected_output_dtype="float64"
        )


def test_wrong_counts_fail():
    with pytest.raises(LayerContractError, match="2 trainable weights, expected 1") as info:
        run_layer_contract(keras.layers.Dense, {"units": 3}, input_data=X,
                           expected_num_trainable_weights=1)
    assert info.value.clause == "counts"
    layer = keras.layers.Dropout(0.5, seed=1)
    check_weight_counts(layer, expected_num_seed_generators=1)
    with pytest.raises(LayerContractError, match="seed generators"):
        check_weight_counts(layer, expected_num_seed_generators=0)


def test_clauses_run_alone():
    layer = Scale(3)
    revived = check_config(layer, {"units": 3}, lambda config: Scale.from_config(config))
    assert revived.units == 3
    model = keras.Sequential([keras.Input((5,)), Scale(3)])
    check_keras_save(model, X)


H = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
MASK = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool)


@keras.saving.register_keras_serializable(package="contract_test")
class LeakyPooling(keras.layers.Layer):
    """Averages every position, padding included."""

    def call(self, x, padding_mask=None):
        return keras.ops.mean(x, axis=1)


def test_masking_clause():
    run_layer_contract(MaskedMeanPooling, {}, input_data=H, padding_mask=MASK,
                       run_saved_model=False, run_mixed_precision=False)
    layer = LeakyPooling()
    with pytest.raises(LayerContractError, match="padded content") as info:
        check_masking(layer, H, MASK)
    assert info.value.clause == "masking"
