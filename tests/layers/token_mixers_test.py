"""The attention-free token mixers against numpy references written from the papers."""

import keras
import numpy as np
import pytest
from scipy.special import erf

from keras_space.layers import (
    ExternalAttention,
    FNetBlock,
    GMLPBlock,
    MLPMixerBlock,
    ResMLPBlock,
    SynthesizerAttention,
)
from keras_space.testing import check_masking, run_layer_contract

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
B, N, C = 3, 8, 16
X = RNG.normal(size=(B, N, C)).astype("float32")
LENGTHS = np.array([8, 5, 2])
MASK = np.arange(N)[None, :] < LENGTHS[:, None]


# ----------------------------------------------------------------- numpy parts
def w(layer):
    return [np.asarray(v, dtype="float64") for v in layer.weights]


def gelu(z):
    return 0.5 * z * (1 + erf(z / np.sqrt(2)))


def softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ln(x, norm):
    gamma, beta = w(norm)
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + norm.epsilon) * gamma + beta


def dense(x, layer, act=None):
    kernel, *bias = w(layer)
    y = x @ kernel + (bias[0] if bias else 0.0)
    return {None: y, "gelu": gelu(y), "relu": np.maximum(y, 0)}[act]


def over_tokens(x, token_linear, causal):
    """The paper's token mixing: every channel column (length n) times a matrix."""
    kernel, bias = w(token_linear)
    if causal:
        kernel = np.triu(kernel)  # output j sees inputs i <= j
    return np.einsum("ij,bic->bjc", kernel, x) + bias[None, :, None]


def randomize(layer):
    for v in layer.weights:
        v.assign(RNG.normal(scale=0.3, size=v.shape).astype("float32"))


def mlp_mixer_ref(layer, x, mask, causal):
    u = ln(x, layer.norm1) * mask[..., None]
    x = x + over_tokens(gelu(over_tokens(u, layer.token_in, causal)), layer.token_out, causal)
    return x + dense(dense(ln(x, layer.norm2), layer.channel_in, "gelu"), layer.channel_out)


def res_mlp_ref(layer, x, mask, causal):
    a1, b1, s1, a2, b2, s2 = w(layer)[:6]
    z = x + s1 * over_tokens((a1 * x + b1) * mask[..., None], layer.token_mix, causal)
    return z + s2 * dense(dense(a2 * z + b2, layer.channel_in, "gelu"), layer.channel_out)


def attention_ref(q, k, v, allowed):
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    logits = np.where(allowed, logits, -np.inf)
    return softmax(logits, -1) @ v


def allowed_keys(mask, causal):
    allowed = np.broadcast_to(mask[:, None, :], (len(mask), N, N))
    if causal:
        allowed = allowed & np.tril(np.ones((N, N), bool))
    return allowed


def gmlp_ref(layer, x, mask, causal):
    h = ln(x, layer.norm)
    z = dense(h, layer.proj_in, "gelu")
    z1, z2 = z[..., : layer.ffn_dim // 2], z[..., layer.ffn_dim // 2 :]
    gate = over_tokens(ln(z2, layer.gate_norm) * mask[..., None], layer.spatial, causal)
    if layer.attention is not None:
        att = layer.attention
        q, k, v = (np.einsum("bnc,chd->bnhd", h, w(d)[0])[..., 0, :] + w(d)[1][0]
                   for d in (att.query_dense, att.key_dense, att.value_dense))
        o = attention_ref(q, k, v, allowed_keys(mask, causal))
        kernel, bias = w(att.output_dense)
        gate = gate + o @ kernel[0] + bias
    return x + dense(z1 * gate, layer.proj_out)


def fnet_ref(layer, x, mask, causal):
    mixed = np.fft.fft2(x * mask[..., None], axes=(1, 2)).real
    y = ln(x + mixed, layer.norm1)
    return ln(y + dense(dense(y, layer.ffn_in, "gelu"), layer.ffn_out), layer.norm2)


def external_ref(layer, x, mask, causal):
    logits = dense(dense(ln(x, layer.norm), layer.query), layer.memory_key)  # (b, n, S)
    out = np.zeros_like(logits)
    for b in range(len(x)):
        for t in range(N):
            if not mask[b, t]:
                continue
            seen = [i for i in range(N) if mask[b, i] and (i <= t or not causal)]
            e = np.exp(logits[b, seen] - logits[b, seen].max(0))
            out[b, t] = np.exp(logits[b, t] - logits[b, seen].max(0)) / e.sum(0)
    out = out / (out.sum(-1, keepdims=True) + 1e-9)
    return x + dense(dense(out, layer.memory_value), layer.proj_out)


def synthesizer_ref(layer, x, mask, causal):
    h = ln(x, layer.norm)
    heads = layer.num_heads
    if layer.mode == "random":
        logits = np.broadcast_to(np.asarray(layer.logits, "float64"), (len(x), heads, N, N))
    else:
        b = dense(dense(h, layer.synth_in, "relu"), layer.synth_out)
        logits = b.reshape(len(x), N, heads, N).transpose(0, 2, 1, 3)
    allowed = allowed_keys(mask, causal)[:, None]
    a = softmax(np.where(allowed, logits, -np.inf), -1)
    v = dense(h, layer.value).reshape(len(x), N, heads, C // heads)
    out = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(len(x), N, C)
    return x + dense(out, layer.proj_out)


CASES = {
    "mixer": (MLPMixerBlock, dict(tokens_mlp_dim=6, channels_mlp_dim=12), mlp_mixer_ref),
    "mixer_causal": (MLPMixerBlock, dict(channels_mlp_dim=12, causal=True), mlp_mixer_ref),
    "resmlp": (ResMLPBlock, dict(channels_mlp_dim=12), res_mlp_ref),
    "resmlp_causal": (ResMLPBlock, dict(channels_mlp_dim=12, causal=True), res_mlp_ref),
    "gmlp": (GMLPBlock, dict(ffn_dim=12), gmlp_ref),
    "amlp_causal": (GMLPBlock, dict(ffn_dim=12, tiny_attention_dim=5, causal=True), gmlp_ref),
    "amlp": (GMLPBlock, dict(ffn_dim=12, tiny_attention_dim=5), gmlp_ref),
    "fnet": (FNetBlock, dict(ffn_dim=12), fnet_ref),
    "external": (ExternalAttention, dict(memory_units=6), external_ref),
    "external_causal": (ExternalAttention, dict(memory_units=6, causal=True), external_ref),
    "synth_random": (SynthesizerAttention, dict(num_heads=2, mode="random"), synthesizer_ref),
    "synth_dense_causal": (SynthesizerAttention, dict(num_heads=2, mode="dense", hidden_dim=10, causal=True),
                           synthesizer_ref),
}


def built(name):
    cls, kwargs, ref = CASES[name]
    layer = cls(**kwargs)
    layer(X)
    randomize(layer)
    return layer, ref, kwargs.get("causal", False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_numpy_reference(name):
    layer, ref, causal = built(name)
    np.testing.assert_allclose(layer(X), ref(layer, X.astype("float64"), np.ones((B, N), bool), causal),
                               rtol=1e-4, atol=1e-4)
    # Padded positions hold 1e3 in the layer's input and the reference's zero-free input:
    # the real positions must match the reference, so padding has no influence on them.
    poisoned = X.copy()
    poisoned[~MASK] = 1e3
    got = np.asarray(layer(poisoned, padding_mask=MASK))
    want = ref(layer, X.astype("float64"), MASK, causal)
    np.testing.assert_allclose(got[MASK], want[MASK], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(n for n in CASES if "causal" in n))
def test_causal_output_ignores_the_future(name):
    layer, _, _ = built(name)
    base = np.asarray(layer(X))
    for t in (0, 3, N - 2):
        changed = X.copy()
        changed[:, t + 1 :] = RNG.normal(scale=5.0, size=changed[:, t + 1 :].shape)
        out = np.asarray(layer(changed))
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_keras_mask_is_used_and_passed_on():
    ids = np.where(MASK, RNG.integers(1, 50, size=MASK.shape), 0)
    inputs = keras.Input((N,), dtype="int32")
    emb = keras.layers.Embedding(50, C, mask_zero=True)
    layer = MLPMixerBlock(channels_mlp_dim=8)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(layer(emb(inputs))))
    h = np.asarray(emb(ids))
    block = np.asarray(layer(h, padding_mask=MASK))
    want = np.stack([block[i, MASK[i]].mean(0) for i in range(B)])
    np.testing.assert_allclose(model.predict(ids, verbose=0), want, rtol=1e-5, atol=1e-5)


def test_fnet_masking_is_zero_padding():
    """Documented behaviour: padded *content* is ignored, padded *length* is not."""
    layer, _, _ = built("fnet")
    got = np.asarray(layer(X, padding_mask=MASK))
    np.testing.assert_allclose(got[MASK], fnet_ref(layer, X.astype("float64"), MASK, False)[MASK],
                               rtol=1e-4, atol=1e-4)
    short = np.asarray(layer(X[1:2, :5]))  # the same sentence without its padding
    assert not np.allclose(short[0], got[1, :5], atol=1e-3)
    with pytest.raises(ValueError, match="no causal variant"):
        FNetBlock(causal=True)


def test_fnet_runs_in_float32_under_mixed_precision():
    layer = FNetBlock(ffn_dim=12, dtype="mixed_float16")
    big = (X * 30).astype("float16")  # FFT sums of n*c terms would overflow float16 at 65504 * ...
    out = np.asarray(layer(big))
    assert out.dtype == np.float16 and np.all(np.isfinite(out))
    layer32 = FNetBlock(ffn_dim=12)
    layer32(X)
    for a, b in zip(layer32.weights, layer.weights, strict=True):
        a.assign(np.asarray(b))
    np.testing.assert_allclose(out, layer32(big.astype("float32")), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("cls, kwargs", [
    (MLPMixerBlock, {}), (ResMLPBlock, {}), (GMLPBlock, dict(ffn_dim=8)),
    (SynthesizerAttention, {}),
])
def test_fixed_length_mixers_refuse_other_lengths(cls, kwargs):
    layer = cls(**kwargs)
    layer(X)
    with pytest.raises(ValueError, match="built for sequence length 8"):
        layer(X[:, :5])
    with pytest.raises(ValueError, match="sequence length must be known"):
        cls(**kwargs)(keras.Input((None, C)))


def test_variable_length_mixers_take_any_length():
    for layer in (FNetBlock(ffn_dim=8), ExternalAttention(memory_units=4)):
        assert layer(X).shape == X.shape and layer(X[:, :5]).shape == (B, 5, C)


@pytest.mark.parametrize("cls, kwargs, match", [
    (MLPMixerBlock, dict(channels_mlp_dim=0), "channels_mlp_dim=0"),
    (MLPMixerBlock, dict(tokens_mlp_dim=4, causal=True), "square"),
    (GMLPBlock, dict(ffn_dim=7), "ffn_dim=7"),
    (SynthesizerAttention, dict(mode="sparse"), "mode='sparse'"),
    (SynthesizerAttention, dict(num_heads=3), "num_heads=3"),
    (ExternalAttention, dict(memory_units=-1), "memory_units=-1"),
    (ResMLPBlock, dict(causal="yes"), "causal='yes'"),
    (GMLPBlock, dict(dropout=1.5), "dropout=1.5"),
])
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)(X)


@pytest.mark.parametrize("cls, kwargs", [
    (MLPMixerBlock, dict(tokens_mlp_dim=6, channels_mlp_dim=12, dropout=0.1, seed=1)),
    (ResMLPBlock, dict(channels_mlp_dim=12, causal=True)),
    (GMLPBlock, dict(ffn_dim=12)),
    (FNetBlock, dict(ffn_dim=12)),
    (ExternalAttention, dict(memory_units=6)),
    (SynthesizerAttention, dict(num_heads=2, mode="dense")),
])
def test_layer_contract(cls, kwargs, saved_model_once):
    run_layer_contract(
        cls, kwargs, input_data=X, expected_output_shape=X.shape, padding_mask=MASK,
        run_saved_model=saved_model_once,
        # Keras's Dropout owns a SeedGenerator only when its rate is > 0
        expected_num_seed_generators=int(kwargs.get("dropout", 0.0) > 0),
        expected_num_non_trainable_weights=0,
    )


@pytest.mark.parametrize("cls, kwargs", [
    (MLPMixerBlock, dict(channels_mlp_dim=12)),
    (MLPMixerBlock, dict(channels_mlp_dim=12, causal=True)),
    (ResMLPBlock, dict(channels_mlp_dim=12)),
    (GMLPBlock, dict(ffn_dim=12, tiny_attention_dim=4)),
    (GMLPBlock, dict(ffn_dim=12, causal=True)),
    (FNetBlock, dict(ffn_dim=12)),
    (ExternalAttention, dict(memory_units=6, causal=True)),
    (SynthesizerAttention, dict(num_heads=2, mode="random")),
    (SynthesizerAttention, dict(num_heads=2, mode="dense", causal=True)),
])
def test_non_finite_padding_never_reaches_real_positions(cls, kwargs):
    """NaN, inf and -inf at padded positions (inf * 0 = NaN once leaked through a product)."""
    layer = cls(**kwargs)
    layer(X)
    check_masking(layer, X, MASK)
