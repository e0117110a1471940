"""The one padding-mask rule of every keras_space layer.

A layer that reads padding takes it from two places: the `padding_mask` call
argument (keras-hub's name: True/1 = real token, shape (batch, sequence)) and
the Keras mask that arrives with its inputs (from `Embedding(mask_zero=True)`,
a `Masking` layer, or an upstream layer's `compute_mask`). When both are
given, **the explicit `padding_mask` argument wins** (keras-hub's rule): it is
what the caller wrote at this call. A layer with several inputs uses the mask
of its first input. Without either, every position is real. A mask that is not
boolean must hold 0/1 only (a 2 is refused, not read as "real").
"""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


@keras_space_export("keras_space.utils.masking.resolve_padding_mask", serializable=False)
def resolve_padding_mask(mask, padding_mask, inputs=None):
    """The (batch, sequence) boolean padding mask to use, or None.

    Args:
        mask: the Keras mask Keras passes to `call` (a tensor, a list of
            tensors for multi-input layers, or None).
        padding_mask: the `padding_mask` call argument, or None.
        inputs: the (batch, sequence, ...) tensor the mask belongs to; when
            given, a mask of another (static) shape is refused naming both.
    """
    m = padding_mask
    if m is None:
        m = mask[0] if isinstance(mask, (list, tuple)) else mask
    if m is None:
        return None
    if inputs is not None:
        expected, received = tuple(inputs.shape[:2]), tuple(m.shape)
        if len(received) != 2 or any(
            e is not None and r is not None and e != r for e, r in zip(expected, received, strict=False)
        ):
            raise ValueError(
                f"`padding_mask` must have shape (batch, sequence) = {expected} to match the "
                f"inputs of shape {tuple(inputs.shape)}. Received: padding_mask of shape {received}"
            )
    if keras.backend.standardize_dtype(m.dtype) != "bool":  # 1/0 ints or floats: no 2s
        m = validation.all_bits("padding_mask", m)
    return ops.cast(m, "bool")
