"""Obscure errors made clear: each refusal names what it refuses (issue 16's list)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_space.growth import narrow_outputs
from keras_space.layers import (
    ExternalAttention,
    GMLPBlock,
    MaskedMeanPooling,
    MLPMixerBlock,
    RandomProjection,
    ResMLPBlock,
    SynthesizerAttention,
)
from keras_space.losses import InfoNCE
from keras_space.models import GradCacheModel, sentence_encoder
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
    for layer in (GMLPBlock(ffn_dim=4), MLPMixerBlock(channels_mlp_dim=4)):
        with pytest.raises(ValueError, match=r"at least one token.*\(2, 0, 3\)"):
            layer(np.zeros((2, 0, 3), "float32"))


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


MIXERS_BUILT_FOR_LENGTH_5 = [
    lambda: MLPMixerBlock(tokens_mlp_dim=4, channels_mlp_dim=8),
    lambda: GMLPBlock(ffn_dim=8),
    lambda: ResMLPBlock(channels_mlp_dim=8),
    lambda: SynthesizerAttention(2, mode="dense"),
]


@pytest.mark.parametrize("make", MIXERS_BUILT_FOR_LENGTH_5)
def test_fixed_length_mixers_refuse_another_length_inside_tf_function(make):
    layer = make()
    layer(np.ones((2, 5, 8), "float32"))
    other = np.ones((2, 7, 8), "float32")
    with pytest.raises(ValueError, match="built for sequence length 5.*Received: inputs of length 7"):
        tf.function(layer)(other)  # static shape: refused while tracing
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 8))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="built for sequence length 5"):
        dynamic(other)  # length known only at run time: refused by the graph's check
    assert dynamic(np.ones((3, 5, 8), "float32")).shape == (3, 5, 8)


@pytest.mark.parametrize("layer", [MaskedMeanPooling(), ExternalAttention(memory_units=4)])
def test_a_padding_mask_of_another_shape_is_refused_naming_both(layer):
    x = np.ones((2, 5, 8), "float32")
    with pytest.raises(ValueError, match=r"padding_mask` must have shape .* \(2, 5\).*Received: "
                       r"padding_mask of shape \(2, 4\)"):
        layer(x, padding_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"Received: padding_mask of shape \(2, 5, 1\)"):
        layer(x, padding_mask=np.ones((2, 5, 1), bool))


def test_info_nce_refuses_an_empty_batch_and_a_label_per_pair_mismatch():
    y_pred = np.random.default_rng(0).normal(size=(4, 2, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"at least one \(anchor, positive\) pair.*\(0, 2, 3\)"):
        InfoNCE()(None, y_pred[:0])
    graph = tf.function(lambda y: InfoNCE()(None, y),
                        input_signature=[tf.TensorSpec((None, 2, 3))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one"):
        graph(y_pred[:0])
    with pytest.raises(ValueError, match=r"one label per .*\(4\). Received: 3 labels"):
        InfoNCE(mask_duplicates=True)(np.arange(3), y_pred)


def _grad_cache(encoder=None):
    if encoder is None:
        encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model = GradCacheModel(encoder, micro_batch_size=2)
    model.compile(optimizer="sgd")
    return model


def test_grad_cache_refuses_mismatched_and_empty_batches():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"same number of rows.*Received: batch sizes \[6, 4\]"):
        _grad_cache().fit(tf.data.Dataset.from_tensors(((x, x[:4]),)), verbose=0)
    with pytest.raises(ValueError, match=r"Received: batch sizes \[0, 0\]"):
        _grad_cache().fit(tf.data.Dataset.from_tensors(((x[:0], x[:0]),)), verbose=0)
    with pytest.raises(ValueError, match="Keras reads a pair .a, b. as .x, y."):
        _grad_cache().fit(tf.data.Dataset.from_tensors((x, x)), verbose=0)
    # sizes known only at run time: the graph checks them before encoding
    spec = tf.TensorSpec((None, 3))
    uneven = tf.data.Dataset.from_generator(
        lambda: iter([((x, x[:4]),)]), output_signature=((spec, spec),)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="same number of rows"):
        _grad_cache().fit(uneven, verbose=0)
    # tuples: a negative tensor of another size, a 1-tuple, the old two-argument call
    with pytest.raises(ValueError, match=r"Received: batch sizes \[6, 6, 5\]"):
        _grad_cache().grad_cache_gradients((x, x, x[:5]))
    with pytest.raises(ValueError, match=r"hard negatives.*Received: x of length 1"):
        _grad_cache().grad_cache_gradients((x,))
    with pytest.raises(ValueError, match=r"Received: x of type ndarray"):
        _grad_cache().grad_cache_gradients(x, x)


def test_grad_cache_learned_temperature_needs_its_weight_and_info_nce_its_scale():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    y_pred = np.stack([x, x], axis=1)
    with pytest.raises(ValueError, match="needs `logit_scale=`.*Received: logit_scale=None"):
        InfoNCE(learnable_temperature=True)(None, y_pred)
    with pytest.raises(ValueError, match="only taken with `learnable_temperature=True`"):
        InfoNCE()(None, y_pred, logit_scale=10.0)
    with pytest.raises(ValueError, match=r"at least 1 / max_logit_scale = 0.01.*temperature=0.001"):
        InfoNCE(0.001, learnable_temperature=True)
    for name, value in (("max_logit_scale", 0), ("max_logit_scale", np.inf),
                        ("learnable_temperature", "yes")):
        with pytest.raises(ValueError, match=f"{name}="):
            InfoNCE(**{name: value})
    with pytest.raises(ValueError, match=r"\(batch, 2 \+ hard negatives, dim\).*\(6, 1, 3\)"):
        InfoNCE()(None, x[:, None])
    # a model compiled with a fixed temperature has no weight to learn
    model = _grad_cache()
    model.compile(optimizer="sgd", loss=InfoNCE())
    model.loss = InfoNCE(learnable_temperature=True)
    with pytest.raises(ValueError, match="no `logit_scale` weight: compile the model"):
        model.grad_cache_gradients((x, x))


def test_grad_cache_builds_an_unbuilt_encoder():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    model = _grad_cache(keras.layers.Dense(4))
    history = model.fit((x, x), batch_size=6, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and model.encoder.built


@pytest.mark.parametrize("bad", [np.nan, np.inf, None], ids=["nan", "inf", "none"])
def test_accumulator_on_non_finite_or_missing_gradients_is_the_large_batch_step(bad):
    """A micro-step's NaN/inf gradient reaches the update as it would in the large-batch
    step (Keras optimizers apply it; a LossScaleOptimizer skips it); a missing (None)
    gradient counts as zero in the window's mean."""
    grads = [None if bad is None else np.array([bad, 1.0, 2.0], "float32"),
             np.array([3.0, 1.0, 0.0], "float32")]
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = GradientAccumulator(keras.optimizers.SGD(0.1), steps=2)
    for g in grads:
        optimizer.apply([g], [variable])
    total = sum(np.zeros(3, "float32") if g is None else g for g in grads)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(variable.numpy(), 1.0 - 0.1 * total / 2, rtol=1e-6)
    assert int(optimizer.iterations) == 1
