"""SmoothMax: max(a, b) smoothed by convolution with an approximate identity."""

from keras_space import activations as A
from keras_space.api_export import keras_space_export
from keras_space.layers.smooth_activation import _SmoothBase


@keras_space_export("keras_space.layers.SmoothMax")
class SmoothMax(_SmoothBase):
    """Elementwise max(a, b) = b + relu(a - b), with the ReLU smoothed.

    A merge layer like `keras.layers.Maximum`: it takes a list of two tensors
    of the same shape.

    Args:
        sigma: initial kernel width, > 0. Defaults to `1.0`.
        kernel: "gaussian" or "logistic". Defaults to `"gaussian"`.
        trainable_sigma: learn the width (parametrised as log sigma). Defaults to `False`.
        per_channel: one width per channel of the last axis. Defaults to `False`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[a, b]` of two float tensors of the same shape.

    Example:

    ```python
    import keras
    from keras_space.layers import SmoothMax

    a, b = keras.Input((8,)), keras.Input((8,))
    y = SmoothMax(sigma=0.1)([a, b])
    ```

    References:
        - [SAU: Smooth activation function using convolution with approximate
          identities](https://arxiv.org/abs/2109.13210)
    """

    def _check(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not isinstance(
            input_shape[0], (list, tuple)
        ):
            raise ValueError(
                f"SmoothMax takes a list of two tensors. Received: input_shape={input_shape}"
            )
        a, b = (tuple(s) for s in input_shape)
        if len(a) != len(b) or any(x is not None and y is not None and x != y for x, y in zip(a, b, strict=True)):
            raise ValueError(
                f"SmoothMax inputs must have the same shape. Received: {a} and {b}"
            )
        return a

    def build(self, input_shape):
        super().build(self._check(input_shape))
        if self.input_spec is not None:  # one spec per input of the pair
            self.input_spec = [self.input_spec, self.input_spec]

    def call(self, inputs):
        a, b = (self.cast_input(t) for t in inputs)
        return A.smooth_max(a, b, self.current_sigma(), kernel=self.kernel)

    def compute_output_shape(self, input_shape):
        return self._check(input_shape)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [m for m in mask if m is not None]
        return masks[0] if len(masks) == 1 else masks[0] & masks[1]
