"""Obscure errors made clear: each refusal names what it refuses (issue 16's list)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_space.growth import narrow_outputs
from keras_space.layers import GMLPBlock, RandomProjection
from keras_space.models import sentence_encoder
from keras_space.ops import (
    vmf_kl_to_uniform,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)
from keras_space.optimizers import GradientAccumulator


def test_accumulator_refuses_variables_it_was_not_built_for():
    a, b = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    optimizer = GradientAccumulator(keras.optimizers.SGD(0.1), steps=2)
    optimizer.apply([np.ones(3, "float32")], [a])
    with pytest.raises(ValueError, match="built for other variables"):
        optimizer.apply([np.ones(3, "float32")], [b])


def test_narrow_outputs_refuses_a_width_not_divisible_by_the_factor():
    with pytest.raises(ValueError, match=r"divisible by factor=2.*\(1, 5\)"):
        narrow_outputs(np.ones((1, 5)), 2)


def test_gmlp_refuses_length_zero():
    with pytest.raises(ValueError, match="at least one token"):
        GMLPBlock(ffn_dim=4)(np.zeros((2, 0, 3), "float32"))


def test_sparse_projection_refuses_a_density_that_leaves_outputs_empty():
    with pytest.raises(ValueError, match="density`=1e-09 leaves an output dimension"):
        RandomProjection(8, kind="sparse", density=1e-9, seed=0)(np.ones((2, 16), "float32"))


def test_sentence_encoder_refuses_a_model_that_is_not_a_backbone():
    with pytest.raises(ValueError, match="must be a keras-hub backbone.*Dense"):
        sentence_encoder(keras.layers.Dense(2))


@pytest.mark.parametrize("fn", [vmf_kl_to_uniform, vmf_log_normalizer, vmf_mean_resultant_length])
@pytest.mark.parametrize("kappa", [0.0, -1.0, np.nan])
def test_vmf_ops_refuse_tensor_kappa_that_is_not_positive(fn, kappa):
    with pytest.raises(ValueError, match="`kappa` must hold positive finite values"):
        fn(3, tf.constant(kappa, tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="kappa"):
        tf.function(lambda k: fn(3, k))(tf.constant(kappa, tf.float64))
