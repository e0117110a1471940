"""SmoothLeakyReLU: the SAU activation (leaky ReLU smoothed), trainable alpha."""

import keras
import numpy as np

from keras_space import activations as A
from keras_space.api_export import keras_space_export
from keras_space.layers.smooth_activation import _SmoothBase
from keras_space.utils import validation


@keras_space_export("keras_space.layers.SmoothLeakyReLU")
class SmoothLeakyReLU(_SmoothBase):
    """SAU: max(x, alpha x) convolved with a kernel of width sigma.

    y = alpha x + (1 - alpha) smooth_relu(x, sigma); `alpha` is trainable by
    default, as in the SAU paper.

    Args:
        alpha: initial negative slope. Defaults to `0.01`.
        sigma: initial kernel width, > 0. Defaults to `1.0`.
        kernel: "gaussian" or "logistic". Defaults to `"gaussian"`.
        trainable_alpha: learn alpha. Defaults to `True`.
        **kwargs: `trainable_sigma` (learn the width, parametrised as log
            sigma), `per_channel` (one alpha and one width per channel of the
            last axis), and the base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a float tensor of any shape.

    Example:

    ```python
    import keras
    from keras_space.layers import SmoothLeakyReLU

    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16), SmoothLeakyReLU(alpha=0.1)]
    )
    ```

    References:
        - [SAU: Smooth activation function using convolution with approximate
          identities](https://arxiv.org/abs/2109.13210)
    """

    def __init__(self, alpha=0.01, sigma=1.0, kernel="gaussian", trainable_alpha=True, **kwargs):
        super().__init__(sigma=sigma, kernel=kernel, **kwargs)
        self.alpha = validation.probability("alpha", alpha)
        self.trainable_alpha = validation.strict_bool("trainable_alpha", trainable_alpha)

    def build(self, input_shape):
        super().build(input_shape)
        self.alpha_weight = self.add_weight(
            name="alpha",
            shape=self._channels(input_shape),
            initializer=keras.initializers.Constant(np.float64(self.alpha)),
            trainable=self.trainable_alpha,
            dtype=self._weight_dtype(),
        )

    def smooth(self, x, sigma):
        return A.smooth_leaky_relu(x, self.alpha_weight, sigma, kernel=self.kernel)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "trainable_alpha": self.trainable_alpha,
        }
