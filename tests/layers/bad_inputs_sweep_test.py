"""Every public layer against a careless user's calls (issue 16's sweep).

One table (`CASES`) lists each layer with a valid input and what README
"Conventions: bad inputs" documents for it; each test below is one kind of bad
call, run over the whole table:

- non-finite values (NaN, inf, -inf) in one example: a clear error
  (`raises`), or they stay in that example (its output is not finite, or equals
  the function's exact limit) and never change another example's output;
- an empty batch: an output with batch 0 of the right shape;
- another rank, or another last dimension after build: a `ValueError` naming
  the expected and received shapes;
- int32 inputs: refused clearly (`ValueError`) or cast, giving the float result;
  float16/bfloat16/float64 inputs: the layer's compute dtype and the float32
  result to the input's precision;
- direct calls (eager and compiled: a bare `tf.function` or `jax.jit`) under `mixed_float16` and
  `mixed_bfloat16`: the float32 layer's result (same weights) to half precision,
  weights never cast down;
- sequence layers: length 1, length 0 (a result or a clear refusal), and rows
  whose every token is masked (finite, and the other rows unchanged).
"""

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from keras_space import layers as L
from tests.backend import BACKEND, compiled, runtime_errors

pytestmark = pytest.mark.all_backends

B, S, C = 3, 4, 8
RNG = np.random.default_rng(0)
X2 = RNG.normal(size=(B, C)).astype("float32")
X3 = RNG.normal(size=(B, S, C)).astype("float32")
ERRORS = runtime_errors()


def _whitening():
    layer = L.WhiteningLayer()
    layer.adapt(np.random.default_rng(1).normal(size=(64, C)))
    return layer


@dataclasses.dataclass
class Case:
    name: str
    make: Callable[[], Any]
    x: np.ndarray
    nonfinite: str = "propagates"  # or "raises", or "limits" (exact limit via `reference`)
    ints: str = "cast"  # or "refused"
    sequence: bool = False  # (batch, sequence, channels) with a padding mask
    length_zero: str = "result"  # or "refused"
    reference: Callable[[np.ndarray], np.ndarray] | None = None
    inputs: Callable[[Any], Any] = lambda x: x  # the layer's inputs made from x  # noqa: E731
    rank: str = "min2"  # or "any" (element-wise) or "exactly3"
    width_fixed: bool = True  # another last dimension after build is refused

    def call(self, layer, x, **kwargs):
        return layer(self.inputs(x), **kwargs)

    def __str__(self):
        return self.name


def _gauss_relu(x):
    return np.where(np.isposinf(x), np.inf, np.where(np.isneginf(x), 0.0, np.nan))


ELEMENTWISE = dict(nonfinite="limits", rank="any", width_fixed=False)
MIXER = dict(ints="refused", rank="exactly3", sequence=True)
FIXED_LENGTH_MIXER = dict(MIXER, length_zero="refused")

CASES = [
    Case("SmoothReLU", lambda: L.SmoothReLU(sigma=0.5), X2, reference=_gauss_relu,
         **ELEMENTWISE),
    Case("SmoothReLU_per_channel", lambda: L.SmoothReLU(sigma=0.5, per_channel=True), X2,
         reference=_gauss_relu, **dict(ELEMENTWISE, width_fixed=True)),
    Case("SmoothAbs", lambda: L.SmoothAbs(sigma=0.5), X2,
         reference=lambda x: np.where(np.isinf(x), np.inf, np.nan), **ELEMENTWISE),
    Case("SmoothSign", lambda: L.SmoothSign(sigma=0.5), X2,
         reference=lambda x: np.where(np.isinf(x), np.sign(x), np.nan), **ELEMENTWISE),
    Case("SmoothLeakyReLU", lambda: L.SmoothLeakyReLU(sigma=0.5, alpha=0.1), X2,
         reference=lambda x: np.where(np.isinf(x), np.where(x > 0, x, 0.1 * x), np.nan),
         **ELEMENTWISE),
    Case("SmoothActivation_step", lambda: L.SmoothActivation(fn="step", sigma=0.5), X2,
         reference=lambda x: np.where(np.isinf(x), (x > 0).astype(float), np.nan),
         **ELEMENTWISE),
    Case("SmoothMax", lambda: L.SmoothMax(sigma=0.5), X2, inputs=lambda x: [x, x / 2],
         reference=lambda x: np.where(np.isinf(x), x, np.nan), **ELEMENTWISE),
    Case("RandomProjection", lambda: L.RandomProjection(4, seed=0), X2),
    Case("RandomProjection_sparse", lambda: L.RandomProjection(4, kind="sparse", seed=0), X2),
    Case("SimHash", lambda: L.SimHash(num_bits=4, seed=0), X2, nonfinite="raises"),
    Case("WhiteningLayer", _whitening, X2),
    Case("VonMisesFisher", lambda: L.VonMisesFisher(kappa=10.0, seed=0), X2),
    Case("VonMisesFisher_per_example", lambda: L.VonMisesFisher(kappa=None, seed=0), X2,
         inputs=lambda x: [x, 5.0 + abs(x[..., 0])]),  # kappa rows: the layer's own test
    Case("PowerSpherical", lambda: L.PowerSpherical(kappa=10.0, seed=0), X2),
    Case("PowerSpherical_per_example", lambda: L.PowerSpherical(kappa=None, seed=0), X2,
         inputs=lambda x: [x, 5.0 + abs(x[..., 0])]),
    Case("PowerSpherical_sequence", lambda: L.PowerSpherical(kappa=10.0, seed=0), X3,
         sequence=True),  # per-token latents with padding (the mask code: the shared base)
    Case("MaskedMeanPooling", L.MaskedMeanPooling, X3, sequence=True, rank="exactly3",
         width_fixed=False),
    Case("PromptEncoder", lambda: L.PromptEncoder(2, C, seed=0), X3, rank="exactly3"),
    Case("MLPMixerBlock", lambda: L.MLPMixerBlock(tokens_mlp_dim=4, channels_mlp_dim=8), X3,
         **FIXED_LENGTH_MIXER),
    Case("GMLPBlock", lambda: L.GMLPBlock(ffn_dim=8), X3, **FIXED_LENGTH_MIXER),
    Case("GMLPBlock_tiny_attention", lambda: L.GMLPBlock(ffn_dim=8, tiny_attention_dim=4), X3,
         **FIXED_LENGTH_MIXER),
    Case("FNetBlock", lambda: L.FNetBlock(ffn_dim=8), X3, **MIXER),
    Case("ResMLPBlock", lambda: L.ResMLPBlock(channels_mlp_dim=8), X3, **FIXED_LENGTH_MIXER),
    Case("ExternalAttention", lambda: L.ExternalAttention(memory_units=4), X3, **MIXER),
    Case("SynthesizerAttention_dense", lambda: L.SynthesizerAttention(2, mode="dense"), X3,
         **FIXED_LENGTH_MIXER),
    Case("SynthesizerAttention_random", lambda: L.SynthesizerAttention(2, mode="random"), X3,
         **FIXED_LENGTH_MIXER),
]
SEQUENCE_CASES = [c for c in CASES if c.sequence]


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _built(case):
    layer = case.make()
    return layer, _np(case.call(layer, case.x))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_values_stay_in_their_example(case, value):
    layer, clean = _built(case)
    x = case.x.copy()
    x[0, ..., 1] = value
    if case.nonfinite == "raises":
        with pytest.raises(ERRORS, match="finite"):
            case.call(layer, x)
        return
    out = _np(case.call(layer, x))
    np.testing.assert_array_equal(out[1:], clean[1:])  # other examples untouched
    if case.nonfinite == "limits":  # element-wise: the exact limit at that element
        np.testing.assert_array_equal(out[0, ..., 1], case.reference(x[0, ..., 1]))
        np.testing.assert_array_equal(np.delete(out[0], 1, -1), np.delete(clean[0], 1, -1))
    else:
        assert not np.all(np.isfinite(out[0])), "a non-finite input became a finite output"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_empty_batch_and_wrong_shapes(case):
    layer, clean = _built(case)
    empty = _np(case.call(layer, case.x[:0]))
    assert empty.shape == (0,) + clean.shape[1:]
    wider = np.ones(case.x.shape[:-1] + (C + 1,), "float32")
    if case.width_fixed:
        with pytest.raises(ValueError, match=r"expected axis -1 of input shape to have value 8, "
                           r"but received input with shape \(3, (4, )?9\)"):
            case.call(layer, wider)
    else:
        assert _np(case.call(layer, wider)).shape[-1] in (1, C + 1)
    rank_one = case.x[(0,) * (case.x.ndim - 1)]
    wrong_ranks = {"any": [], "min2": [rank_one], "exactly3": [case.x[0], case.x[..., None]]}
    for x in wrong_ranks[case.rank]:
        for target in (layer, case.make()):  # built, and built on the wrong rank
            with pytest.raises(ValueError, match=r"(?s)(ndim|expects).*" + re.escape(str(x.shape))):
                case.call(target, x)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_input_dtypes(case):
    layer, clean = _built(case)
    ints = np.round(case.x * 2).astype("int32")
    if case.ints == "refused":
        with pytest.raises(ValueError, match="int32"):
            case.call(layer, ints)
    else:
        expected = _np(case.call(layer, ints.astype("float32")))
        np.testing.assert_allclose(_np(case.call(layer, ints)), expected, rtol=1e-6, atol=1e-6)
    for dtype, tol in (("float16", 1e-2), ("bfloat16", 5e-2), ("float64", 1e-6)):
        x = keras.ops.cast(case.x, dtype)
        out = case.call(layer, x)
        assert keras.backend.standardize_dtype(out.dtype) == case.make().compute_dtype or (
            out.dtype == clean.dtype
        ) or not keras.backend.is_float_dtype(out.dtype)
        expected = _np(case.call(layer, keras.ops.cast(x, "float32")))
        np.testing.assert_allclose(_np(out), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_direct_calls_under_a_mixed_policy(case, policy):
    reference, clean = _built(case)
    keras.config.set_dtype_policy(policy)
    layer = case.make()
    case.call(layer, case.x)
    layer.set_weights(reference.get_weights())
    for w in layer.weights:
        assert keras.backend.standardize_dtype(w.dtype) not in ("float16", "bfloat16"), w.path
    tol = 2e-2 if policy == "mixed_float16" else 1e-1
    direct = functools.partial(case.call, layer)
    if BACKEND == "jax" and policy == "mixed_float16" and case.name == "GMLPBlock_tiny_attention":
        # Keras's MultiHeadAttention under jit: XLA on CPU has no float16 x float16 ->
        # float32 dot (docs/backends.md). A clear error, eager calls work.
        with pytest.raises(ValueError, match="F16_F16_F32"):
            compiled(direct)(case.x)
        calls = (direct,)
    else:
        calls = (direct, compiled(direct))
    for call in calls:
        out = call(case.x)
        assert keras.backend.standardize_dtype(out.dtype) in (layer.compute_dtype, "int32", "int64")
        np.testing.assert_allclose(_np(out), clean, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", SEQUENCE_CASES, ids=str)
def test_sequence_lengths_and_fully_masked_rows(case):
    layer, clean = _built(case)
    mask = np.ones((B, S), bool)
    mask[0] = False  # a row with no real token
    out = _np(layer(case.x, padding_mask=mask))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[1:], clean[1:], rtol=1e-6, atol=1e-6)
    fresh = case.make()
    one = _np(fresh(case.x[:, :1]))
    assert one.shape[0] == B and np.all(np.isfinite(one))
    if case.length_zero == "refused":
        with pytest.raises(ValueError, match="length|at least one token"):
            case.make()(case.x[:, :0])
    else:
        zero = _np(case.make()(case.x[:, :0]))
        assert np.all(np.isfinite(zero))
