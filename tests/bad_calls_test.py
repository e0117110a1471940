"""Obscure errors made clear: each refusal names what it refuses (issue 16's list)."""

import keras
import numpy as np
import pytest

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
from tests.backend import compiled, f64, runtime_errors

pytestmark = pytest.mark.all_backends


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
        fn(3, f64(kappa))
    with pytest.raises(runtime_errors(), match="kappa"):
        compiled(lambda k: fn(3, k))(f64(kappa))


MIXERS_BUILT_FOR_LENGTH_5 = [
    lambda: MLPMixerBlock(tokens_mlp_dim=4, channels_mlp_dim=8),
    lambda: GMLPBlock(ffn_dim=8),
    lambda: ResMLPBlock(channels_mlp_dim=8),
    lambda: SynthesizerAttention(2, mode="dense"),
]


@pytest.mark.parametrize("make", MIXERS_BUILT_FOR_LENGTH_5)
def test_fixed_length_mixers_refuse_another_length_when_compiled(make):
    layer = make()
    layer(np.ones((2, 5, 8), "float32"))
    with pytest.raises(ValueError, match="built for sequence length 5.*Received: inputs of length 7"):
        compiled(layer)(np.ones((2, 7, 8), "float32"))  # static shape: refused while tracing


@pytest.mark.tensorflow_only("a length known only at run time: a tf.function's input_signature "
                             "(JAX traces every shape)")
@pytest.mark.parametrize("make", MIXERS_BUILT_FOR_LENGTH_5)
def test_fixed_length_mixers_refuse_another_run_time_length_in_a_graph(make):
    import tensorflow as tf

    layer = make()
    layer(np.ones((2, 5, 8), "float32"))
    other = np.ones((2, 7, 8), "float32")
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
    with pytest.raises(ValueError, match="at least one"):  # static shape: refused while tracing
        compiled(lambda y: InfoNCE()(None, y))(y_pred[:0])
    with pytest.raises(ValueError, match=r"one label per .*\(4\). Received: 3 labels"):
        InfoNCE(mask_duplicates=True)(np.arange(3), y_pred)


@pytest.mark.tensorflow_only("a batch size known only at run time: a tf.function's input_signature")
def test_info_nce_refuses_an_empty_batch_of_run_time_size():
    import tensorflow as tf

    graph = tf.function(lambda y: InfoNCE()(None, y),
                        input_signature=[tf.TensorSpec((None, 2, 3))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one"):
        graph(np.zeros((0, 2, 3), "float32"))


def _grad_cache(encoder=None):
    if encoder is None:
        encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    model = GradCacheModel(encoder, micro_batch_size=2)
    model.compile(optimizer="sgd")
    return model


def test_grad_cache_refuses_mismatched_and_empty_batches():
    import tensorflow as tf  # tf.data input: Keras takes it on every backend

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
    with pytest.raises(runtime_errors(), match="same number of rows"):
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


# ------------------------------------------------------------- issue 30's list

def _sick_file(tmp_path, score="3.5", judgment="NEUTRAL"):
    from keras_space.datasets.sick import HEADER

    path = tmp_path / "sick.txt"
    path.write_text("\t".join(HEADER) + f"\n1\tA man plays.\tA man sings.\t{score}\t{judgment}\n")
    return path


def _grad_cache_fit(**kwargs):
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = GradCacheModel(encoder, micro_batch_size=2)
    model.compile(keras.optimizers.SGD(0.1), loss=InfoNCE())
    return model.fit(**kwargs, batch_size=4, verbose=0)


_X4 = np.random.default_rng(0).normal(size=(4, 4)).astype("float32")


def _prompt_template(token_ids):
    from keras_space.layers import PromptEncoder

    layer = PromptEncoder(num_virtual_tokens=2, embedding_dim=8, placeholder_ids=[5, 6])
    return layer(np.ones((2, 5, 8), "float32"), token_ids=token_ids)


def _sick_pairs(**changes):
    from keras_space.datasets.sick import SickPairs

    pairs = SickPairs(["1", "2"], ["a b", "c d"], ["e f", "g h"], np.array([3.0, 4.0]),
                      ["ENTAILMENT", "NEUTRAL"])
    return pairs._replace(**changes)


OBSCURE_30 = {  # call -> (exception, the words the message must hold)
    "jl_min_dim n_samples str": (
        lambda tmp: __import__("keras_space.ops", fromlist=["x"]).jl_min_dim(n_samples="abc"),
        ValueError, "n_samples='abc'"),
    "evaluator scores str": (
        lambda tmp: __import__("keras_space.callbacks", fromlist=["x"]).SimilarityEvaluator(
            (["a"], ["b"]), "abc", keras.layers.Dense(2)),
        ValueError, "scores='abc'"),
    "widen seed str": (
        lambda tmp: __import__("keras_space.growth", fromlist=["x"]).widen(
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)]),
            2, noise=0.1, seed="abc"),
        ValueError, "seed='abc'"),
    "whitening adapt str": (
        lambda tmp: __import__("keras_space.layers", fromlist=["x"]).WhiteningLayer().adapt("abc"),
        ValueError, "data='abc'"),
    "grad cache sample_weight str": (
        lambda tmp: _grad_cache_fit(x=(_X4, _X4), sample_weight="abc"),
        ValueError, "sample_weight='abc'"),
    "grad cache None part": (
        lambda tmp: _grad_cache_fit(x=(_X4, _X4, None)), ValueError, "None at positions [2]"),
    "pooling mask holding 2": (
        lambda tmp: MaskedMeanPooling()(np.ones((2, 3, 4), "float32"),
                                        padding_mask=np.array([[1, 2, 0], [1, 1, 1]])),
        ValueError, "`padding_mask` must hold 0/1 bits only"),
    "pooling rank-2 symbolic": (
        lambda tmp: MaskedMeanPooling()(keras.Input((4,))), ValueError, "(batch, sequence, dim)"),
    "pooling mismatched list": (
        lambda tmp: MaskedMeanPooling()([np.ones((2, 3, 4), "float32"),
                                         np.ones((2, 5, 4), "float32")]),
        ValueError, "inputs of shapes [(2, 3, 4), (2, 5, 4)]"),
    "prompt template ids shape": (
        lambda tmp: _prompt_template(np.array([[5, 6, 1, 1], [5, 6, 1, 1]])),
        ValueError, "token_ids of shape (2, 4)"),
    "prompt template float ids": (
        lambda tmp: _prompt_template(np.array([[5, 6, 1, 1, 1]] * 2, "float32")),
        ValueError, "token_ids of dtype float32"),
    "sick relatedness 7.5": (
        lambda tmp: __import__("keras_space.datasets", fromlist=["x"]).load_sick(
            _sick_file(tmp, score="7.5")),
        ValueError, "relatedness_score='7.5'"),
    "sick tuples without entailment": (
        lambda tmp: __import__("keras_space.datasets", fromlist=["x"]).sick_contrastive_tuples(
            _sick_pairs(judgments=["NEUTRAL", "CONTRADICTION"])),
        ValueError, "judgments ['CONTRADICTION', 'NEUTRAL']"),
    "sick tuples mismatched lengths": (
        lambda tmp: __import__("keras_space.datasets", fromlist=["x"]).sick_contrastive_tuples(
            _sick_pairs(sentences_b=["e f"])),
        ValueError, "'sentences_b': 1"),
    "info_nce negative logit_scale": (
        lambda tmp: InfoNCE(learnable_temperature=True)(
            None, np.stack([np.eye(3, dtype="float32")] * 2, axis=1), logit_scale=-5.0),
        ValueError, "logit_scale=-5.0"),
    "info_nce negative logit_scale tensor": (
        lambda tmp: InfoNCE(learnable_temperature=True)(
            None, np.stack([np.eye(3, dtype="float32")] * 2, axis=1),
            logit_scale=keras.ops.convert_to_tensor(-5.0)),
        ValueError, "`logit_scale` must hold a positive finite scale"),
}


@pytest.mark.parametrize("name", sorted(OBSCURE_30))
def test_issue_30_obscure_errors_name_the_argument(name, tmp_path):
    call, error, words = OBSCURE_30[name]
    with pytest.raises(error) as caught:
        call(tmp_path)
    assert words in str(caught.value), str(caught.value)


def test_p_tuning_refuses_ids_past_the_vocabulary_and_masks_holding_two():
    import keras_hub

    from keras_space.models import p_tuning_model

    ids = np.full((2, 6), 7, "int32")
    for x, words in (
        ({"token_ids": ids + 63, "padding_mask": np.ones((2, 6), "int32")},
         r"`token_ids` must hold ids in \[0, 64\)"),
        ({"token_ids": ids, "padding_mask": np.full((2, 6), 2, "int32")},
         "`padding_mask` must hold 0/1 bits only"),
    ):
        # a new model per case: Keras 3.15's JAX trainer leaves a model's variables
        # empty after an error inside its compiled step (docs/backends.md)
        gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=64, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=32)
        model = p_tuning_model(gpt2, num_virtual_tokens=2, head="causal_lm", label_token_ids=[10, 11])
        with pytest.raises(ValueError, match=words):
            model(x)  # eagerly
        with pytest.raises(runtime_errors(), match=words):
            model.predict(x, verbose=0)  # in the compiled function


@pytest.mark.tensorflow_only("SavedModel export")
def test_grad_cache_model_exports_after_one_call(tmp_path):
    import tensorflow as tf

    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = GradCacheModel(encoder, micro_batch_size=2)
    with pytest.raises(ValueError, match="call the model once"):
        model.export(tmp_path / "never")
    want = np.asarray(model((_X4, _X4 + 1)))
    model.export(tmp_path / "called")  # said "never called" although it was (issue 30)
    served = tf.saved_model.load(str(tmp_path / "called"))
    np.testing.assert_allclose(served.serve((_X4, _X4 + 1)), want, rtol=1e-6)
