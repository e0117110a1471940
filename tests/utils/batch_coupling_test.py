import keras
import pytest

from keras_space.utils import find_batch_coupled_layers

pytestmark = pytest.mark.all_backends


def test_finds_trainable_batch_normalization_recursively():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    frozen = keras.layers.BatchNormalization()
    frozen.trainable = False
    model = keras.Sequential([keras.Input((4,)), inner, frozen, keras.layers.LayerNormalization()])
    found = find_batch_coupled_layers(model)
    assert found == [inner.layers[1]]
    assert find_batch_coupled_layers(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) == []
