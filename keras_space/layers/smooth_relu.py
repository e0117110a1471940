"""SmoothReLU: ReLU smoothed by convolution with an approximate identity."""

from keras_space import activations as A
from keras_space.api_export import keras_space_export
from keras_space.layers.smooth_activation import _SmoothBase


@keras_space_export("keras_space.layers.SmoothReLU")
class SmoothReLU(_SmoothBase):
    """max(x, 0) convolved with a kernel of width sigma (closed form).

    See `keras_space.activations.smooth_relu` for the formula.

    Args:
        sigma: initial kernel width, > 0. Defaults to `1.0`.
        kernel: "gaussian" or "logistic". Defaults to `"gaussian"`.
        trainable_sigma: learn the width (parametrised as log sigma). Defaults to `False`.
        per_channel: one width per channel of the last axis. Defaults to `False`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a float tensor of any shape.

    Example:

    ```python
    import keras
    from keras_space.layers import SmoothReLU

    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16), SmoothReLU(sigma=0.5, trainable_sigma=True)]
    )
    ```

    References:
        - [SAU: Smooth activation function using convolution with approximate
          identities](https://arxiv.org/abs/2109.13210)
    """

    bounded = False

    def smooth(self, x, sigma):
        return A.smooth_relu(x, sigma, kernel=self.kernel)
