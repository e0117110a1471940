import keras
import numpy as np
import pytest

from keras_space.layers import PromptEncoder
from keras_space.testing import run_layer_contract

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
EMB = RNG.normal(size=(3, 5, 8)).astype("float32")
IDS = np.array([[101, 7, 2, 3, 0], [7, 8, 9, 1, 0], [4, 9, 4, 5, 6]], dtype="int32")
PLACEHOLDERS = [7, 9]


def numpy_prompt(layer):
    """The prompt from the layer's weights, computed independently in numpy."""
    w = {v.path.split("/", 1)[1]: np.asarray(v, dtype="float64") for v in layer.weights}
    table = w["prompt_table"]
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    if layer.encoder == "none":
        return table
    if layer.encoder == "mlp":
        h = relu(table @ w["dense_0/kernel"] + w["dense_0/bias"])
        h = relu(h @ w["dense_1/kernel"] + w["dense_1/bias"])
    else:
        sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731

        def lstm(xs, name, direction):
            k, r, b = (w[f"{name}/{direction}_{name}/lstm_cell/{n}"]
                       for n in ("kernel", "recurrent_kernel", "bias"))
            units = r.shape[0]
            hh, cc, out = np.zeros(units), np.zeros(units), []
            for x in xs:
                z = x @ k + hh @ r + b
                i, f, g, o = (z[j * units : (j + 1) * units] for j in range(4))
                cc = sig(f) * cc + sig(i) * np.tanh(g)
                hh = sig(o) * np.tanh(cc)
                out.append(hh)
            return np.stack(out)

        h = table
        for name in (["lstm"] if layer.encoder == "lstm" else ["lstm_0", "lstm_1"]):
            h = np.concatenate([lstm(h, name, "forward"), lstm(h[::-1], name, "backward")[::-1]], -1)
        h = relu(h @ w["dense_0/kernel"] + w["dense_0/bias"])
    out = h @ w["dense_out/kernel"] + w["dense_out/bias"]
    # the paper's (PEFT's) encoder is not residual
    return out if layer.encoder == "lstm_mlp" else table + out


def randomize(layer):
    """Give every weight (incl. the zero-initialised last Dense) random values."""
    for v in layer.weights:
        v.assign(RNG.normal(scale=0.3, size=v.shape).astype("float32"))


@pytest.mark.parametrize("encoder", ["none", "mlp", "lstm", "lstm_mlp"])
def test_prefix_mode_against_numpy(encoder):
    layer = PromptEncoder(2, 8, encoder=encoder, encoder_hidden_dim=6)
    layer(EMB)
    randomize(layer)
    prompt = numpy_prompt(layer)
    want = np.concatenate([np.broadcast_to(prompt, (3, 2, 8)), EMB], axis=1)
    np.testing.assert_allclose(layer(EMB), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ["none", "mlp", "lstm", "lstm_mlp"])
def test_template_mode_replaces_placeholders_anywhere(encoder):
    layer = PromptEncoder(2, 8, encoder=encoder, placeholder_ids=PLACEHOLDERS)
    layer(EMB, IDS)
    randomize(layer)
    prompt = numpy_prompt(layer)
    want = EMB.astype("float64").copy()
    for b, s in zip(*np.nonzero(np.isin(IDS, PLACEHOLDERS)), strict=True):
        want[b, s] = prompt[PLACEHOLDERS.index(IDS[b, s])]
    got = np.asarray(layer(EMB, IDS))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    untouched = ~np.isin(IDS, PLACEHOLDERS)
    np.testing.assert_array_equal(got[untouched], EMB[untouched])


def test_zero_initialised_encoder_starts_at_the_anchor_embeddings():
    vocab = RNG.normal(size=(20, 8)).astype("float32")
    for encoder in ("none", "mlp", "lstm"):
        layer = PromptEncoder(3, 8, encoder=encoder)
        layer.initialize_from_tokens(vocab, [4, 11, 4])
        np.testing.assert_allclose(layer.prompt_embeddings(), vocab[[4, 11, 4]], atol=0)
    # the paper's encoder (not residual): the anchors are its input, its output their image
    layer = PromptEncoder(3, 8, encoder="lstm_mlp", encoder_hidden_dim=6)
    layer.initialize_from_tokens(vocab, [4, 11, 4])
    np.testing.assert_array_equal(layer.prompt_table, vocab[[4, 11, 4]])
    assert len(layer.trainable_weights) == 1 + 2 * 2 * 3 + 2 * 2   # table, 2 bi-LSTMs, 2 Dense
    np.testing.assert_allclose(layer.prompt_embeddings(), numpy_prompt(layer), rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer.prompt_embeddings(), vocab[[4, 11, 4]], atol=1e-3)


def test_prefix_extends_the_keras_mask():
    ids = np.array([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0]])
    inputs = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(10, 4, mask_zero=True)
    prompt = PromptEncoder(2, 4, encoder="none")
    x = prompt(emb(inputs))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))
    got = model.predict(ids, verbose=0)
    table, p = np.asarray(emb.embeddings), np.asarray(prompt.prompt_table)
    want = np.stack([np.concatenate([p, table[r[r > 0]]]).mean(0) for r in ids])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    mask = np.asarray(prompt.compute_mask(emb(ids), emb.compute_mask(ids)))
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        prompt.extend_padding_mask(np.array([[1, 0]], "int32")), [[1, 1, 1, 0]]
    )


def test_template_mode_keeps_the_mask():
    layer = PromptEncoder(2, 8, placeholder_ids=PLACEHOLDERS)
    mask = IDS != 0
    np.testing.assert_array_equal(layer.compute_mask(EMB, mask), mask)


@pytest.mark.parametrize("encoder", ["mlp", "lstm", "lstm_mlp"])
def test_freeze_gives_identical_outputs_without_the_encoder(encoder):
    layer = PromptEncoder(2, 8, encoder=encoder, dropout=0.3, placeholder_ids=PLACEHOLDERS, seed=1)
    layer(EMB, IDS)
    randomize(layer)
    frozen = layer.freeze()
    np.testing.assert_array_equal(frozen(EMB, IDS), layer(EMB, IDS, training=False))
    assert frozen.encoder == "none" and len(frozen.weights) == 1 and not frozen.trainable_weights


@pytest.mark.parametrize(
    "kwargs, data, shape",
    [
        # first: the SavedModel clause runs on it (a SavedModel of the LSTMs costs 10 s)
        (dict(encoder="mlp", placeholder_ids=PLACEHOLDERS, max_sequence_length=9),
         {"inputs": EMB, "token_ids": IDS}, (3, 5, 8)),
        # the paper's encoder holds the residual "lstm" one's parts (bidirectional LSTMs, Dense)
        (dict(encoder="lstm_mlp", encoder_hidden_dim=6, dropout=0.1, seed=1), EMB, (3, 7, 8)),
    ],
)
def test_layer_contract(kwargs, data, shape, saved_model_once):
    dtypes = {"inputs": "float32", "token_ids": "int32"} if isinstance(data, dict) else None
    run_layer_contract(
        PromptEncoder,
        dict(num_virtual_tokens=2, embedding_dim=8, **kwargs),
        input_data=data,
        input_dtypes=dtypes,
        expected_output_shape=shape,
        padding_mask=IDS != 0,
        expected_num_non_trainable_weights=0,
        run_saved_model=saved_model_once,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(placeholder_ids=[5, 6, 7]), "More placeholders than virtual tokens"),
        (dict(placeholder_ids=[5]), "placeholder_ids"),
        (dict(placeholder_ids=[5, 5]), "distinct"),
        (dict(encoder="gru"), "encoder='gru'"),
        (dict(encoder="lstm", encoder_hidden_dim=5), "encoder_hidden_dim=5"),
        (dict(encoder="lstm_mlp", encoder_hidden_dim=7), "encoder='lstm_mlp'.*encoder_hidden_dim=7"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(max_sequence_length=0), "max_sequence_length=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptEncoder(2, 8, **kwargs)


def test_too_long_sequences_are_refused():
    layer = PromptEncoder(2, 8, max_sequence_length=6)
    with pytest.raises(ValueError, match="Sequence too long"):
        layer(keras.Input((5, 8)))
    with pytest.raises(Exception, match="Sequence too long"):  # dynamic length: run-time check
        layer(EMB)
    assert layer(EMB[:, :4]).shape == (3, 6, 8)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="needs `token_ids`"):
        PromptEncoder(2, 8, placeholder_ids=PLACEHOLDERS)(EMB)
    with pytest.raises(ValueError, match="embedding_dim=4"):
        PromptEncoder(2, 4)(EMB)
    with pytest.raises(ValueError, match="num_virtual_tokens"):
        PromptEncoder(2, 8).initialize_from_tokens(np.zeros((10, 8)), [1, 2, 3])
