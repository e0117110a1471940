"""SmoothActivation: a named or user function smoothed by an approximate identity."""

import math

import keras
import numpy as np
from keras import ops

from keras_space import activations as A
from keras_space.api_export import keras_space_export
from keras_space.utils import validation

NAMED = ("relu", "abs", "sign", "step", "floor")


class _SmoothBase(keras.layers.Layer):
    """Shared width handling for the smooth-activation layers.

    Holds the kernel width as a float32 weight `log_sigma` (scalar, or one per
    channel), trainable on request; computes in float32 under mixed precision.
    Subclasses implement `smooth(x, sigma)`.
    """

    bounded = False  # whether the smoothed function is bounded (Cauchy allowed)

    def __init__(
        self,
        sigma=1.0,
        kernel="gaussian",
        trainable_sigma=False,
        per_channel=False,
        **kwargs,
    ):
        super().__init__(autocast=False, **kwargs)
        self.sigma = validation.positive_float("sigma", sigma, minimum=A.SIGMA_RANGE[0], maximum=A.SIGMA_RANGE[1])
        allowed = A.KERNELS if self.bounded else A.MEAN_KERNELS
        A._validate_kernel(kernel, allowed=allowed, fn_name=self._fn_label())
        self.kernel = kernel
        self.trainable_sigma = validation.strict_bool("trainable_sigma", trainable_sigma)
        self.per_channel = validation.strict_bool("per_channel", per_channel)
        self.supports_masking = True

    def _fn_label(self):
        return type(self).__name__

    def _channels(self, input_shape):
        channels = input_shape[-1]
        if self.per_channel and channels is None:
            raise ValueError(
                "`per_channel=True` needs a known last dimension. Received: "
                f"input_shape={input_shape}"
            )
        return (channels,) if self.per_channel else ()

    def build(self, input_shape):
        if self.per_channel:  # later calls on another width are refused naming both shapes
            self.input_spec = keras.InputSpec(axes={-1: self._channels(input_shape)[0]})
        self.log_sigma = self.add_weight(
            name="log_sigma",
            shape=self._channels(input_shape),
            initializer=keras.initializers.Constant(np.float64(math.log(self.sigma))),
            trainable=self.trainable_sigma,
            dtype=self._weight_dtype(),
        )

    def _weight_dtype(self):
        """float32 (never cast down under mixed precision), float64 for a float64 layer."""
        return "float64" if self.dtype_policy.variable_dtype == "float64" else "float32"

    def current_sigma(self):
        """The kernel width(s) now (float32; float64 for a float64 layer)."""
        return ops.exp(self.log_sigma)

    def cast_input(self, x):
        """Inputs in the compute dtype (autocast is off so that the weights are
        read in float32 under mixed precision)."""
        return ops.cast(x, self.compute_dtype)

    def call(self, inputs):
        return self.smooth(self.cast_input(inputs), self.current_sigma())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sigma": self.sigma,
            "kernel": self.kernel,
            "trainable_sigma": self.trainable_sigma,
            "per_channel": self.per_channel,
        }


@keras_space_export("keras_space.layers.SmoothActivation")
class SmoothActivation(_SmoothBase):
    """An activation made smooth by convolution with an approximate identity.

    y = (f * phi_sigma)(x) = E[f(x + sigma Z)], Z drawn from the kernel. Named
    functions use exact closed forms (`keras_space.activations`); any other
    elementwise callable written with `keras.ops` is smoothed numerically by
    `keras_space.activations.mollify`.

    Args:
        fn: "relu", "abs", "sign", "step", "floor", or an elementwise callable
            written with keras.ops (register it with
            `keras.saving.register_keras_serializable` to save the layer).
            Defaults to `"relu"`.
        sigma: initial kernel width, > 0. Defaults to `1.0`.
        kernel: "gaussian", "logistic" or "cauchy" (Cauchy only for bounded
            functions: sign, step, or a bounded callable). Defaults to `"gaussian"`.
        trainable_sigma: learn the width (parametrised as log sigma). Defaults to `False`.
        per_channel: one width per channel of the last axis. Defaults to `False`.
        num_points: quadrature size for callables (see `mollify`). Defaults to `256`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a float tensor of any shape.

    Example:

    ```python
    import keras
    from keras_space.layers import SmoothActivation

    layer = SmoothActivation("floor", sigma=0.1)
    y = layer(keras.ops.linspace(-2.0, 2.0, 9))
    smooth_tanh_step = SmoothActivation(keras.ops.sign, sigma=0.5, kernel="cauchy")
    ```

    References:
        - [SAU: Smooth activation function using convolution with approximate
          identities](https://arxiv.org/abs/2109.13210)
    """

    def __init__(
        self,
        fn="relu",
        sigma=1.0,
        kernel="gaussian",
        trainable_sigma=False,
        per_channel=False,
        num_points=256,
        **kwargs,
    ):
        if isinstance(fn, dict):
            fn = keras.saving.deserialize_keras_object(fn)
        if isinstance(fn, str):
            if fn not in NAMED:
                raise ValueError(
                    f"`fn` must be one of {NAMED} or a callable written with "
                    f"keras.ops. Received: fn={fn!r}"
                )
        else:
            A._validate_fn(fn)
        self.fn = fn
        self.bounded = isinstance(fn, str) and fn in ("sign", "step") or callable(fn)
        self.num_points = validation.positive_int("num_points", num_points, minimum=2)
        super().__init__(
            sigma=sigma,
            kernel=kernel,
            trainable_sigma=trainable_sigma,
            per_channel=per_channel,
            **kwargs,
        )

    def _fn_label(self):
        return self.fn if isinstance(self.fn, str) else getattr(self.fn, "__name__", "fn")

    def smooth(self, x, sigma):
        if isinstance(self.fn, str):
            return A.CLOSED_FORMS[self.fn](x, sigma, kernel=self.kernel)
        return A.mollify(self.fn, x, sigma, kernel=self.kernel, num_points=self.num_points)

    def get_config(self):
        fn = self.fn
        if not isinstance(fn, str):
            fn = keras.saving.serialize_keras_object(fn)
        return {**super().get_config(), "fn": fn, "num_points": self.num_points}
