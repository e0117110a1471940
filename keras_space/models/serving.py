"""SavedModel export for serving (TensorFlow-only: `keras.export.ExportArchive`).

`model.export()` writes a signature with the model's own input dtypes; keras-hub
backbones take an int32 `padding_mask` while their preprocessors produce a
boolean one. `export_for_serving` writes a `serve` endpoint that takes what the
preprocessors give (boolean mask), or, given the preprocessor, raw strings: the
tokenizer and packer then live inside the SavedModel and a server needs only
TensorFlow (and `tensorflow_text`, whose ops the tokenizers use).
"""

import keras
import tensorflow as tf

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


def _input_specs(model):
    specs = {}
    for tensor in model.inputs:
        name = tensor.name
        dtype = tf.bool if name == "padding_mask" else tf.as_dtype(tensor.dtype)
        specs[name] = tf.TensorSpec(tensor.shape, dtype, name=name)
    return specs


@keras_space_export("keras_space.models.export_for_serving", serializable=False)
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

    ```python
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

    def run(features):
        missing = sorted(set(specs) - set(features))
        if missing:
            raise ValueError(
                f"The preprocessor's output lacks the model's inputs {missing}. "
                f"Received: {sorted(features)}"
            )
        return model({name: tf.cast(features[name], dtypes[name]) for name in specs},
                     training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    if preprocessor is None:
        archive.add_endpoint("serve", run, input_signature=[specs])
    else:
        # keras-hub preprocessors read a positional tuple as (x, y): pairs go as x=(a, b)
        preprocessor(x=tuple(tf.constant(["warm up"]) for _ in range(num_texts)))  # builds it
        archive.track(preprocessor)
        strings = [tf.TensorSpec((None,), tf.string, name=f"text_{i}") for i in range(num_texts)]

        def serve(*texts):
            features = preprocessor(x=tuple(texts))
            if isinstance(features, tuple):  # (x, y, sample_weight) preprocessors
                features = features[0]
            return run(features)

        archive.add_endpoint("serve", serve, input_signature=strings)
    archive.write_out(str(filepath), verbose=False)
    return filepath
