"""The one validation module, and every public constructor refusing bad arguments through it."""

import keras
import numpy as np
import pytest

from keras_space import activations as A
from keras_space import layers as L
from keras_space.callbacks import SimilarityEvaluator
from keras_space.datasets import load_sts
from keras_space.growth import narrow_outputs, widen, widen_inputs
from keras_space.losses import InfoNCE
from keras_space.models import GradCacheModel, encode_texts, sentence_encoder
from keras_space.ops import (
    hamming_similarity,
    jl_min_dim,
    randomized_svd,
    vmf_kl_to_uniform,
)
from keras_space.optimizers import GradientAccumulator
from keras_space.utils import validation as V
from tests.backend import runtime_errors

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)


@pytest.mark.parametrize(
    "check, value, error, match",
    [
        (lambda v: V.positive_int("n", v), True, TypeError, "`n` must be a positive int. Received: n=True"),
        (lambda v: V.positive_int("n", v), 2.0, TypeError, "n=2.0"),
        (lambda v: V.positive_int("n", v), "3", TypeError, "n='3'"),
        (lambda v: V.positive_int("n", v), 0, ValueError, "n=0"),
        (lambda v: V.positive_int("n", v, minimum=2), 1, ValueError, "an int >= 2"),
        (lambda v: V.non_negative_int("n", v), -1, ValueError, "n=-1"),
        (lambda v: V.positive_float("x", v), float("nan"), ValueError, "x=nan"),
        (lambda v: V.positive_float("x", v), float("inf"), ValueError, "x=inf"),
        (lambda v: V.positive_float("x", v), 0.0, ValueError, "x=0.0"),
        (lambda v: V.positive_float("x", v), "0.1", TypeError, "x='0.1'"),
        (lambda v: V.positive_float("x", v, maximum=1.0), 1.5, ValueError, r"\(0, 1.0\]"),
        (lambda v: V.finite_float("x", v), float("-inf"), ValueError, "finite"),
        (lambda v: V.non_negative_float("x", v), -0.5, ValueError, ">= 0"),
        (lambda v: V.probability("p", v), 1.0, ValueError, r"\[0, 1\)"),
        (lambda v: V.probability("p", v), "0.1", TypeError, "p='0.1'"),
        (lambda v: V.choice("mode", v, ("a", "b")), "c", ValueError, r"one of \('a', 'b'\)"),
        (lambda v: V.choice("mode", v, ("a", "b")), ["a"], ValueError, "mode=\\['a'\\]"),
        (lambda v: V.strict_bool("flag", v), "no", TypeError, "flag='no'"),
        (lambda v: V.strict_bool("flag", v), 1, TypeError, "a bool"),
        (lambda v: V.int_sequence("ids", v), [1, 2.5], TypeError, "ids="),
        (lambda v: V.int_sequence("ids", v, distinct=True), [1, 1], ValueError, "distinct"),
        (lambda v: V.int_sequence("ids", v, minimum=0), [-1], ValueError, ">= 0"),
        (lambda v: V.positive_values("sigma", v), [1.0, -1.0], ValueError, "positive and finite"),
        (lambda v: V.positive_values("sigma", v), "1", TypeError, "sigma='1'"),
    ],
)
def test_checkers_refuse(check, value, error, match):
    with pytest.raises(error, match=match) as info:
        check(value)
    assert isinstance(info.value, ValueError)  # wrong types are ValueErrors too


def test_checkers_return_canonical_values():
    assert V.positive_int("n", np.int64(3)) == 3 and type(V.positive_int("n", np.int64(3))) is int
    assert V.positive_float("x", 2) == 2.0 and type(V.positive_float("x", 2)) is float
    assert V.strict_bool("f", np.bool_(True)) is True
    assert V.int_sequence("ids", np.array([1, 2])) == [1, 2]
    assert V.positive_int("n", None, allow_none=True) is None
    assert V.probability("p", 0) == 0.0


X = np.zeros((2, 4, 8), "float32")

# Every public constructor and function: (callable, bad kwargs, the name the error gives).
SWEEP = [
    (L.MLPMixerBlock, dict(channels_mlp_dim=True), "channels_mlp_dim=True"),
    (L.MLPMixerBlock, dict(dropout="0.1"), "dropout='0.1'"),
    (L.MLPMixerBlock, dict(layer_norm_epsilon=-1.0), "layer_norm_epsilon=-1.0"),
    (L.GMLPBlock, dict(spatial_init_scale=float("nan")), "spatial_init_scale=nan"),
    (L.GMLPBlock, dict(tiny_attention_dim=0), "tiny_attention_dim=0"),
    (L.ResMLPBlock, dict(layerscale_init=float("nan")), "layerscale_init=nan"),
    (L.ResMLPBlock, dict(causal="yes"), "causal='yes'"),
    (L.FNetBlock, dict(ffn_dim=2.5), "ffn_dim=2.5"),
    (L.ExternalAttention, dict(memory_units=True), "memory_units=True"),
    (L.SynthesizerAttention, dict(mode="sparse"), "mode='sparse'"),
    (L.SynthesizerAttention, dict(seed=-3), "seed=-3"),
    (L.PromptEncoder, dict(num_virtual_tokens=True, embedding_dim=8), "num_virtual_tokens=True"),
    (L.PromptEncoder, dict(num_virtual_tokens=2, embedding_dim=8, dropout="0.1"), "dropout='0.1'"),
    (L.PromptEncoder, dict(num_virtual_tokens=2, embedding_dim=8, encoder="gru"), "encoder='gru'"),
    (L.PromptEncoder, dict(num_virtual_tokens=2, embedding_dim=8, placeholder_ids=[1, "2"]), "placeholder_ids="),
    (L.PromptEncoder, dict(num_virtual_tokens=2, embedding_dim=8, max_sequence_length=0), "max_sequence_length=0"),
    (L.RandomProjection, dict(units=True), "units=True"),
    (L.RandomProjection, dict(units=4, density=0.0), "density=0.0"),
    (L.RandomProjection, dict(units=4, kind="dense"), "kind='dense'"),
    (L.SimHash, dict(num_bits=True), "num_bits=True"),
    (L.SimHash, dict(num_bits=8, num_tables=0), "num_tables=0"),
    (L.SimHash, dict(num_bits=8, output_mode="hex"), "output_mode='hex'"),
    (L.WhiteningLayer, dict(n_components=True), "n_components=True"),
    (L.WhiteningLayer, dict(beta=float("inf")), "beta=inf"),
    (L.WhiteningLayer, dict(epsilon=-1.0), "epsilon=-1.0"),
    (L.WhiteningLayer, dict(mode="svd"), "mode='svd'"),
    (L.SmoothActivation, dict(trainable_sigma="no"), "trainable_sigma='no'"),
    (L.SmoothActivation, dict(sigma="1"), "sigma='1'"),
    (L.SmoothActivation, dict(num_points=1), "num_points=1"),
    (L.SmoothActivation, dict(sigma=1e-300), "sigma=1e-300"),
    (L.SmoothReLU, dict(sigma=1e300), "sigma=1e\\+300"),
    (lambda **kw: A.smooth_abs(X, **kw), dict(sigma=1e-30), "sigma=1e-30"),
    (InfoNCE, dict(temperature=1e-45), "temperature=1e-45"),
    (InfoNCE, dict(temperature=float("inf")), "temperature=inf"),
    (L.SmoothReLU, dict(per_channel=1), "per_channel=1"),
    (L.SmoothLeakyReLU, dict(alpha=1.0), "alpha=1.0"),
    (L.SmoothLeakyReLU, dict(trainable_alpha="yes"), "trainable_alpha='yes'"),
    (L.SmoothReLU, dict(kernel="box"), "kernel='box'"),
    (L.VonMisesFisher, dict(kappa=float("inf")), "kappa=inf"),
    (L.VonMisesFisher, dict(kappa=1.0, learn_kappa="yes"), "learn_kappa='yes'"),
    (L.VonMisesFisher, dict(kappa=1.0, sampler="ulrich"), "sampler='ulrich'"),
    (L.VonMisesFisher, dict(kappa=1.0, sample_in_inference=None), "sample_in_inference=None"),
    (InfoNCE, dict(temperature="0.05"), "temperature='0.05'"),
    (InfoNCE, dict(symmetric="yes"), "symmetric='yes'"),
    (InfoNCE, dict(similarity="l2"), "similarity='l2'"),
    (lambda **kw: GradientAccumulator(keras.optimizers.SGD(), **kw), dict(steps=True), "steps=True"),
    (lambda **kw: GradCacheModel(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), **kw),
     dict(micro_batch_size=0), "micro_batch_size=0"),
    (lambda **kw: A.smooth_relu(X, **kw), dict(sigma=0.0), "sigma=0.0"),
    (lambda **kw: A.mollify(keras.ops.floor, X, **kw), dict(rule="simpson"), "rule='simpson'"),
    (lambda **kw: A.mollify(keras.ops.floor, X, **kw), dict(num_points=True), "num_points=True"),
    (lambda **kw: jl_min_dim(100, **kw), dict(bound="kane"), "bound='kane'"),
    (lambda **kw: randomized_svd(np.eye(4, dtype="float32"), **kw), dict(rank=True), "rank=True"),
    (lambda **kw: randomized_svd(np.eye(4, dtype="float32"), 2, **kw), dict(n_iter=-1), "n_iter=-1"),
    (lambda **kw: vmf_kl_to_uniform(**kw), dict(d=1, kappa=1.0), "d=1"),
    (lambda **kw: vmf_kl_to_uniform(3, **kw), dict(kappa=-1.0), "kappa=-1.0"),
    (lambda **kw: widen(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), **kw),
     dict(factor=True), "factor=True"),
    (lambda **kw: widen(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), 2, **kw),
     dict(noise=float("inf")), "noise=inf"),
    (lambda **kw: widen(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), 2, **kw),
     dict(keep_output_width="yes"), "keep_output_width='yes'"),
    (lambda **kw: sentence_encoder(None, **kw), dict(pooling="max"), "pooling='max'"),
    (lambda **kw: load_sts("nowhere.tsv", **kw), dict(skip_unscored="yes"), "skip_unscored='yes'"),
    (lambda **kw: hamming_similarity([1, 0], [0, 1], **kw), dict(pairwise=1), "pairwise=1"),
    (lambda **kw: widen_inputs(np.ones((1, 2)), **kw), dict(factor=1), "factor=1"),
    (lambda **kw: narrow_outputs(np.ones((1, 4)), **kw), dict(factor=2.0), "factor=2.0"),
    (lambda **kw: encode_texts(None, None, ["a"], **kw), dict(batch_size=-1), "batch_size=-1"),
    (lambda **kw: SimilarityEvaluator((["a"] * 3, ["b"] * 3), [1.0, 2.0, 3.0], None, **kw),
     dict(verbose="loud"), "verbose='loud'"),
]


@pytest.mark.parametrize("make, kwargs, match", SWEEP, ids=[m for *_, m in SWEEP])
def test_public_constructors_refuse_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=f"must be .*Received: {match}"):
        make(**kwargs)


def test_whitening_gamma_that_overflows_is_refused_at_adapt():
    data = np.random.default_rng(0).normal(size=(50, 4)) * [1.0, 1.0, 1.0, 1e-3]
    with pytest.raises(ValueError, match="overflows float64 for gamma=1e\\+308"):
        L.WhiteningLayer(gamma=1e308).adapt(data)


def test_whitening_gamma_whose_outputs_underflow_is_refused_at_adapt():
    """gamma=300 on eigenvalues 4..49: lambda**-150 makes every float32 output 0."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    data = rng.normal(size=(400, 4))
    data = (data - data.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(data.T))).T
    data = data * np.sqrt([49.0, 20.0, 9.0, 4.0]) @ basis.T  # covariance eigenvalues 4..49
    with pytest.raises(ValueError, match="gamma=300.0.*underflow to 0 or overflow"):
        L.WhiteningLayer(gamma=300).adapt(data)
    with pytest.raises(ValueError, match="float16's normal range"):
        L.WhiteningLayer(gamma=-20, dtype="mixed_float16").adapt(data)  # 49**10.5 > 65504
    layer = L.WhiteningLayer(gamma=1.0)  # the usual setting: unit spreads
    layer.adapt(data)
    np.testing.assert_allclose(np.cov(np.asarray(layer(data), "float64").T), np.eye(4), atol=1e-5)


def test_data_checks_run_inside_compiled_steps():
    """`validation.holds` inside `fit`'s compiled step (`tf.function`, or `jax.jit`
    where a debug callback raises when the data arrive: converting a tracer to numpy
    had broken every int padding mask in `fit` on JAX), and eagerly."""
    from keras_space.layers import GMLPBlock, MaskedMeanPooling

    x, m = keras.Input((5, 4)), keras.Input((5,), dtype="int32")
    h = GMLPBlock(ffn_dim=8)(x, padding_mask=m)
    model = keras.Model([x, m], keras.layers.Dense(1)(MaskedMeanPooling()(h, padding_mask=m)))
    model.compile("adam", "mse")
    xs = np.random.default_rng(0).random((8, 5, 4)).astype("float32")
    good = np.ones((8, 5), "int32")
    good[:, 3:] = 0
    model.fit([xs, good], np.ones((8, 1)), verbose=0)  # the checks pass inside the step
    bad = np.full((8, 5), 2, "int32")
    with pytest.raises(ValueError, match="`padding_mask` must hold 0/1 bits only"):
        MaskedMeanPooling()(xs, padding_mask=bad)  # eagerly: the ValueError itself
    with pytest.raises(runtime_errors(), match="`padding_mask` must hold 0/1 bits only"):
        model.fit([xs, bad], np.ones((8, 1)), verbose=0)  # when the data arrive
