"""Finding layers whose training-mode output couples the samples of a batch."""

import keras

from keras_space.api_export import keras_space_export

# Layers that normalise with statistics of the current batch in training.
BATCH_COUPLED = (keras.layers.BatchNormalization,)


@keras_space_export("keras_space.utils.find_batch_coupled_layers")
def find_batch_coupled_layers(model):
    """Layers of `model` (recursively) that couple samples when training.

    A `BatchNormalization` layer that is trainable normalises each batch with
    that batch's own statistics in training, so gradients computed on
    micro-batches are not those of the large batch (gradient accumulation),
    and a sample's embedding depends on the other samples (gradient caching).
    A BatchNormalization with `trainable=False` runs in inference mode and is
    not listed.

    Returns:
        A list of layers, empty when the model is safe.

    Example:

    ```python
    import keras
    from keras_space.utils import find_batch_coupled_layers

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization()])
    if find_batch_coupled_layers(model):  # [BatchNormalization]
        print("use LayerNormalization/GroupNormalization, or freeze BatchNormalization")
    ```
    """
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, BATCH_COUPLED) and layer.trainable
    ]
