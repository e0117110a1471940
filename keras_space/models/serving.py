"""SavedModel export for serving (TensorFlow-only: `keras.export.ExportArchive`).

`model.export()` writes a signature with the model's own input dtypes; keras-hub
backbones take an int32 `padding_mask` while their preprocessors produce a
boolean one. `export_for_serving` writes a `serve` endpoint that takes what the
preprocessors give (boolean mask), or, given the preprocessor, raw strings: the
tokenizer and packer then live inside the SavedModel and a server needs only
TensorFlow (and `tensorflow_text`, whose ops the tokenizers use).
"""

import keras

from keras_space.api_export import keras_space_export
from keras_space.utils import validation
from keras_space.utils._lazy import tensorflow as tf


def _token_vocabulary(model):
    """The vocabulary size of the model's token embedding (None if it has none)."""
    for layer in model._flatten_layers(include_self=False):
        if layer.name == "token_embedding" and hasattr(layer, "input_dim"):
            return int(layer.input_dim)
    return None


def _checked_texts(texts):
    """Refuse, inside the graph, what the served tokenizer would read differently.

    A NUL byte ends a string in the graph's tokenizer but not in an eager one, and
    invalid UTF-8 has no tokens; the texts of a pair must have one batch size
    (keras-hub's packer would otherwise emit uninitialised ids).
    """
    checks = []
    for i, text in enumerate(texts):
        checks.append(tf.debugging.assert_equal(
            tf.strings.regex_full_match(text, "(?s).*\x00.*"), False,
            message=f"text_{i} holds a NUL byte, which the served tokenizer cannot read"))
        # invalid bytes decode to a surrogate, which valid UTF-8 never holds
        codes = tf.strings.unicode_decode(text, "UTF-8", errors="replace",
                                          replacement_char=0xD800).flat_values
        checks.append(tf.debugging.assert_equal(
            tf.reduce_any(codes == 0xD800), False, message=f"text_{i} is not valid UTF-8"))
        if i:
            checks.append(tf.debugging.assert_equal(
                tf.shape(text)[0], tf.shape(texts[0])[0],
                message=f"text_0 and text_{i} must hold the same number of strings"))
    with tf.control_dependencies(checks):
        return tuple(tf.identity(text) for text in texts)


def _input_specs(model):
    specs = {}
    for tensor in model.inputs:
        name = tensor.name
        dtype = tf.bool if name == "padding_mask" else tf.as_dtype(tensor.dtype)
        specs[name] = tf.TensorSpec(tensor.shape, dtype, name=name)
    return specs


@keras_space_export("keras_space.models.export_for_serving", serializable=False, backends=("tensorflow",))
def export_for_serving(model, filepath, preprocessor=None, num_texts=1):
    """Write a SavedModel whose `serve` endpoint takes the preprocessors' output, or strings.

    Without `preprocessor`, `serve` takes the model's inputs by name, with
    `padding_mask` boolean (what keras-hub preprocessors produce; it is cast to
    the model's dtype inside). With `preprocessor` (e.g. a keras-hub
    `BertTextClassifierPreprocessor`), `serve` takes `num_texts` string tensors
    of shape (batch,) (2 for sentence pairs, as a cross-encoder reads them) and
    runs the tokenizer and packer inside the graph.

    Reload with `tf.saved_model.load(filepath).serve(...)`; with a preprocessor,
    `import tensorflow_text` first (it registers the tokenizer's ops).

    Args:
        model: a functional Keras model with named inputs (`sentence_encoder`,
            `p_tuning_model`, a backbone with a head, ...).
        filepath: the SavedModel folder to write.
        preprocessor: optional keras-hub preprocessor layer.
        num_texts: 1 or 2 string inputs when `preprocessor` is given. Defaults to 1.

    Example:

    ```python fixture:minilm fixture:tmp_cwd
    import keras_hub
    import tensorflow as tf
    from keras_space.models import export_for_serving, sentence_encoder
    from keras_space.utils import minilm_path

    model = sentence_encoder(keras_hub.models.BertBackbone.from_preset(minilm_path()))
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=32)
    export_for_serving(model, "served", preprocessor=preprocessor)
    # in the server: import tensorflow as tf, tensorflow_text
    served = tf.saved_model.load("served")
    served.serve(tf.constant(["A man is playing a guitar."]))
    ```
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            "`model` must be a functional Keras model with named inputs. "
            f"Received: model={model!r}"
        )
    num_texts = validation.choice("num_texts", validation.positive_int("num_texts", num_texts), (1, 2))
    specs = _input_specs(model)
    dtypes = {t.name: t.dtype for t in model.inputs}
    vocabulary = _token_vocabulary(model)

    def run(features):
        if vocabulary is not None and "token_ids" in features:
            features = dict(features, token_ids=validation.all_token_ids(
                "token_ids", tf.cast(features["token_ids"], tf.int64), vocabulary))
        return model({name: tf.cast(features[name], dtypes[name]) for name in specs},
                     training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    if preprocessor is None:
        archive.add_endpoint("serve", run, input_signature=[specs])
    else:
        features = _features(preprocessor(x=_warm_up(preprocessor, num_texts)))
        missing = sorted(set(specs) - set(features))
        if missing:
            raise ValueError(
                f"`preprocessor`'s output lacks the model's inputs {missing}. "
                f"Received: preprocessor giving {sorted(features)}"
            )
        archive.track(preprocessor)
        strings = [tf.TensorSpec((None,), tf.string, name=f"text_{i}") for i in range(num_texts)]

        def serve(*texts):
            return run(_features(preprocessor(x=_checked_texts(texts))))

        archive.add_endpoint("serve", serve, input_signature=strings)
    archive.write_out(str(filepath), verbose=False)
    return filepath


def _warm_up(preprocessor, num_texts):
    """Build the preprocessor on `num_texts` strings (refusing what is not one)."""
    import keras_hub

    if isinstance(preprocessor, keras_hub.tokenizers.Tokenizer) or not isinstance(
        preprocessor, keras.layers.Layer
    ):
        raise ValueError(
            "`preprocessor` must be a keras-hub preprocessor layer that packs texts into "
            "the model's inputs (e.g. BertTextClassifierPreprocessor; a bare tokenizer "
            f"gives no segment_ids or padding_mask). Received: preprocessor={preprocessor!r}"
        )
    # keras-hub preprocessors read a positional tuple as (x, y): pairs go as x=(a, b)
    return tuple(tf.constant(["warm up"]) for _ in range(num_texts))


def _features(output):
    if isinstance(output, tuple):  # (x, y, sample_weight) preprocessors
        output = output[0]
    if not isinstance(output, dict):
        raise ValueError(
            "`preprocessor` must return a dict of the model's inputs. "
            f"Received: preprocessor returning {type(output).__name__}"
        )
    return output
