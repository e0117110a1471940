"""MaskedMeanPooling: padding-aware mean over the sequence axis."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.MaskedMeanPooling")
class MaskedMeanPooling(keras.layers.Layer):
    """Mean over the sequence axis that ignores padding, over one or several tensors.

    With one hidden-state tensor (batch, seq, dim) it is the padding-aware
    mean pooling of sentence encoders; with several (e.g. the first and the
    last Transformer layer's outputs: "first-last-avg" of BERT-whitening) it
    averages them first. Padding comes from the `padding_mask` call argument
    (True/1 = real token) or from an upstream Keras mask, the argument winning
    when both are given (`keras_space.utils.masking`); without either every
    position counts. Inputs must be rank 3 (a `ValueError` otherwise); a
    sequence of length 0 pools to zeros. A row with no real token pools to zeros. Sums run in
    float32 under mixed precision, and in float64 for float64 inputs.

    Call arguments:
        inputs: a tensor (batch, seq, dim), or a list of such tensors of the
            same shape to average.
        padding_mask: optional (batch, seq) boolean or 0/1 tensor.

    Example:

    ```python
    import keras_hub
    from keras_space.layers import MaskedMeanPooling
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    pooled = MaskedMeanPooling()(
        backbone.output["sequence_output"], padding_mask=backbone.input["padding_mask"]
    )
    ```

    References:
        - Su et al., "Whitening Sentence Representations for Better Semantics
          and Faster Retrieval", https://arxiv.org/abs/2103.15316
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, padding_mask=None, mask=None):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        _check_shapes([t.shape for t in tensors])
        # summed in float32 at least (float16 / bfloat16 inputs), float64 inputs in float64
        # (not keras.backend.result_type: on JAX it gives float32 for float64 and float32)
        float64 = keras.backend.standardize_dtype(tensors[0].dtype) == "float64"
        wide = "float64" if float64 else "float32"
        x = ops.cast(tensors[0], wide)
        for t in tensors[1:]:
            x = x + ops.cast(t, wide)
        x = x / float(len(tensors))
        padding_mask = resolve_padding_mask(mask, padding_mask, x)
        if padding_mask is None:  # a length-0 sequence pools to zeros, as an all-padding row
            pooled = ops.sum(x, axis=1) / ops.maximum(ops.cast(ops.shape(x)[1], wide), 1.0)
        else:
            real = ops.expand_dims(padding_mask, -1)
            # a select, not x * mask: padded content may be NaN or inf
            total = ops.sum(ops.where(real, x, ops.zeros_like(x)), axis=1)
            count = ops.sum(ops.cast(real, wide), axis=1)
            pooled = total / ops.maximum(count, 1.0)
        return ops.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        multiple = isinstance(inputs_shape[0], (list, tuple))
        shapes = list(inputs_shape) if multiple else [inputs_shape]
        _check_shapes(shapes)
        return (shapes[0][0], shapes[0][2])

    def compute_mask(self, inputs, mask=None, padding_mask=None):
        return None

    def get_config(self):  # explicit: Keras's automatic one fails on a DTypePolicy argument
        return super().get_config()


def _check_shapes(shapes):
    """Every input (batch, sequence, dim), all of one shape where known."""
    shapes = [tuple(shape) for shape in shapes]
    if any(len(shape) != 3 for shape in shapes):
        raise ValueError(
            "MaskedMeanPooling expects (batch, sequence, dim) inputs. "
            f"Received: inputs of shapes {shapes}"
        )
    for axis in range(3):
        known = {shape[axis] for shape in shapes if shape[axis] is not None}
        if len(known) > 1:
            raise ValueError(
                "MaskedMeanPooling averages several inputs of one shape. "
                f"Received: inputs of shapes {shapes}"
            )
