"""sentence_encoder on the real pretrained MiniLM (slow)."""

import keras
import numpy as np
import pytest

from keras_space.models import encode_texts, sentence_encoder

from conftest import load_minilm

pytestmark = pytest.mark.all_backends

SENTENCES = [
    "A man is playing a guitar.",
    "A man plays the guitar on stage while the crowd sings along loudly.",
    "Stocks fell.",
    "The cat sat on the mat.",
]


@pytest.fixture(scope="module")
def minilm():
    keras_hub = pytest.importorskip("keras_hub")
    backbone, pre = load_minilm(32)
    return backbone, pre, keras_hub


def masked_mean(h, mask):
    m = mask[..., None].astype("float64")
    return (h * m).sum(1) / m.sum(1)


@pytest.mark.slow
def test_poolings_against_numpy(minilm):
    """Each pooling against numpy on the backbone's own outputs. The models are called
    directly (one compiled program per model made `predict` cost more than the checks;
    `predict` itself is tested below)."""
    backbone, pre, _ = minilm
    x = {k: np.asarray(v) for k, v in pre(SENTENCES).items()}
    seq = np.asarray(backbone(x)["sequence_output"], dtype="float64")
    first = np.asarray(keras.Model(backbone.input, backbone.get_layer("transformer_layer_0").output)(x))
    mask = x["padding_mask"]
    np.testing.assert_allclose(sentence_encoder(backbone, "mean")(x), masked_mean(seq, mask), atol=1e-5)
    np.testing.assert_allclose(sentence_encoder(backbone, "cls")(x), seq[:, 0], atol=1e-5)
    np.testing.assert_allclose(
        sentence_encoder(backbone, "first_last_avg")(x),
        masked_mean((seq + first) / 2, mask),
        atol=1e-5,
    )


@pytest.mark.slow
def test_padding_and_batching_do_not_change_vectors(minilm, tmp_path):
    backbone, pre, keras_hub = minilm
    encoder = sentence_encoder(backbone, "mean")
    long_pre = keras_hub.models.BertTextClassifierPreprocessor(pre.tokenizer, sequence_length=128)
    full = encoder.predict(long_pre(SENTENCES), verbose=0)
    fast = encode_texts(encoder, pre, SENTENCES, batch_size=3)
    np.testing.assert_allclose(fast, full, atol=1e-5)
    emb = fast / np.linalg.norm(fast, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.saving.load_model(tmp_path / "encoder.keras")
    np.testing.assert_allclose(loaded.predict(long_pre(SENTENCES), verbose=0), full, atol=1e-6)


def test_bad_pooling():
    with pytest.raises(ValueError, match="pooling='max'"):
        sentence_encoder(None, pooling="max")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(texts="hello"), r"a list of strings.*texts='hello'"),
        (dict(texts=[]), "empty"),
        (dict(texts=["a"], batch_size=-1), "batch_size=-1"),
    ],
)
def test_encode_texts_refuses_bad_texts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        encode_texts(None, None, **kwargs)
