"""Sentence encoders from keras-hub Transformer backbones (bert4keras-style pooling)."""

import keras
import numpy as np

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.layers.masked_mean_pooling import MaskedMeanPooling
from keras_space.utils import validation

POOLINGS = ("cls", "mean", "first_last_avg")


@keras_space_export("keras_space.models.sentence_encoder")
def sentence_encoder(backbone, pooling="mean", name="sentence_encoder"):
    """Turn a keras-hub encoder backbone into a sentence encoder.

    The returned functional model takes the backbone's inputs (for BERT:
    `{"token_ids", "segment_ids", "padding_mask"}`, as a keras-hub
    preprocessor gives them) and returns one vector per sentence. It shares
    the backbone's weights, so fine-tuning it fine-tunes the backbone.

    Args:
        backbone: a keras-hub `Backbone` whose output dict has
            "sequence_output" and whose Transformer layers are named
            `transformer_layer_<i>` (BertBackbone and its relatives).
        pooling: "cls" (the first token's last hidden state), "mean"
            (padding-aware mean of the last layer) or "first_last_avg" (mean
            over tokens of the average of the first and the last Transformer
            layer's outputs, as in BERT-whitening). Defaults to `"mean"`.
        name: the model's name. Defaults to `"sentence_encoder"`.

    Returns:
        A `keras.Model` from the backbone's inputs to (batch, hidden_dim).

    Example:

    ```python
    import keras_hub
    from keras_space.models import sentence_encoder
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=64
    )
    encoder = sentence_encoder(backbone, pooling="mean")
    vectors = encoder.predict(preprocessor(["A man plays a guitar.", "Stocks fell."]))
    ```
    """
    validation.choice("pooling", pooling, POOLINGS)
    padding_mask = _backbones.padding_mask_input(backbone)
    last = _backbones.sequence_output(backbone)
    if pooling == "cls":
        pooled = last[:, 0, :]
    elif pooling == "mean":
        pooled = MaskedMeanPooling(name="mean_pooling")(last, padding_mask=padding_mask)
    else:
        first = _backbones.transformer_layers(backbone)[0].output
        pooled = MaskedMeanPooling(name="first_last_avg_pooling")(
            [first, last], padding_mask=padding_mask
        )
    return keras.Model(backbone.input, pooled, name=name)


@keras_space_export("keras_space.models.encode_texts")
def encode_texts(encoder, preprocessor, texts, batch_size=64, length_multiple=16):
    """Embed strings with `encoder` after a keras-hub `preprocessor`, fast on CPU.

    Sentences are sorted by length and each batch is trimmed to its longest
    sentence (rounded up to `length_multiple`, to bound retracing), so short
    sentences do not pay for the preprocessor's full `sequence_length`. The
    result is in the order of `texts`. Padding-aware pooling makes it equal to
    encoding at full length.

    Args:
        encoder: a model from the preprocessor's output dict to (batch, dim)
            vectors (e.g. `sentence_encoder(backbone)`).
        preprocessor: a keras-hub preprocessor (e.g.
            `BertTextClassifierPreprocessor`) returning `token_ids`,
            `padding_mask` (and `segment_ids`).
        texts: a list of strings.
        batch_size: sentences per forward pass. Defaults to `64`.
        length_multiple: batches are trimmed to a multiple of this many
            tokens. Defaults to `16`.

    Returns:
        A float32 numpy array (len(texts), dim).

    Example:

    ```python
    import keras_hub
    from keras_space.models import encode_texts, sentence_encoder
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(minilm_path())
    vectors = encode_texts(sentence_encoder(backbone), pre, ["A cat.", "A dog sleeps."])
    ```
    """
    batch_size = validation.positive_int("batch_size", batch_size)
    length_multiple = validation.positive_int("length_multiple", length_multiple)
    if isinstance(texts, (str, bytes)):
        raise ValueError(
            "`texts` must be a list of strings; a single string would be encoded "
            f"character by character. Received: texts={texts!r} (use [texts])"
        )
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` is empty.")
    features = {k: np.asarray(v) for k, v in preprocessor(texts).items()}
    lengths = features["padding_mask"].sum(axis=1)
    order = np.argsort(lengths, kind="stable")
    full = features["padding_mask"].shape[1]
    out = None
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        width = int(min(full, -(-max(int(lengths[idx].max()), 1) // length_multiple) * length_multiple))
        batch = {k: v[idx, :width] for k, v in features.items()}
        vectors = np.asarray(encoder.predict_on_batch(batch), dtype="float32")
        if out is None:
            out = np.empty((len(texts), vectors.shape[-1]), dtype="float32")
        out[idx] = vectors
    return out
