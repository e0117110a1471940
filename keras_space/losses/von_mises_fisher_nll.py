"""VonMisesFisherNLL: the negative log-likelihood of directions under a predicted vMF."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import vmf


@keras_space_export("keras_space.losses.VonMisesFisherNLL")
class VonMisesFisherNLL(keras.losses.Loss):
    """Negative log-likelihood of target directions under vMF(mu, kappa), per example.

    For directional regression (a direction and its confidence): the model predicts a
    mean direction mu (any non-zero vector; normalised here) and a concentration
    kappa > 0 (e.g. a softplus head) per example, and the loss of target x is

        -log f(x; mu, kappa) = kappa (1 - <x, mu>) - (log C_d(kappa) + kappa)

    written so that nothing cancels: 1 - <x, mu> as |x - mu|^2 / 2 (exact for nearly
    equal directions) and log C_d(kappa) + kappa without its e^kappa-sized terms
    (`keras_space.ops.vmf_log_normalizer` minus kappa). Its value and its gradient in
    kappa, A_d(kappa) - <x, mu>, are continuous across the one place the log
    normaliser switches method (kappa = 2, series to Bessel; tested: across it they change
    by slope times step plus rounding only, 1e-14 of the terms' size in float64 and an
    ulp in float32, d from 2 to 4096; value and gradient against mpmath for kappa from
    1e-3 to 1e5). Computed in the wide
    dtype (float64; float32 on JAX without x64), returned in the loss's dtype (float32
    under a mixed policy; pass `dtype="float64"` for float64 inputs: Keras casts a
    loss's inputs to its dtype). An empty batch gives what Keras's own losses give (an
    empty result, no NaN).

    Call arguments:
        y_true: (batch, d) target directions (non-zero vectors; normalised here).
        y_pred: (batch, d + 1): the mean direction in the first d columns, kappa in
            the last.

    A target or a mean direction with a NaN or inf entry, an all-zero target or mean
    direction, or a kappa that is not positive and finite raises a `ValueError` naming
    it (inside a compiled step: TensorFlow's `InvalidArgumentError` / JAX's runtime
    error with the same message); so do widths that do not match.

    Example:

    >>> import numpy as np
    >>> from keras_space.losses import VonMisesFisherNLL
    >>> x = np.array([[0.0, 0.0, 1.0]])
    >>> pred = np.array([[0.0, 0.0, 2.0, 10.0]])   # mu = e_3 (any length), kappa = 10
    >>> round(float(VonMisesFisherNLL()(x, pred)), 6)   # -log(10 / (2 pi (1 - e^-20)))
    -0.464708
    """

    def __init__(self, reduction="sum_over_batch_size", name="von_mises_fisher_nll", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_true, y_pred = ops.convert_to_tensor(y_true), ops.convert_to_tensor(y_pred)
        if len(y_true.shape) != 2 or len(y_pred.shape) != 2:
            raise ValueError(
                "VonMisesFisherNLL takes y_true of shape (batch, d) and y_pred of shape "
                f"(batch, d + 1). Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}")
        d = y_true.shape[-1]
        if d is None or d < 2 or y_pred.shape[-1] != d + 1:
            raise ValueError(
                "VonMisesFisherNLL needs d >= 2 and y_pred of width d + 1 (the mean direction, "
                f"then kappa). Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}")
        x = vmf._checked_directions("y_true", y_true)
        mu = vmf._checked_directions("y_pred[:, :d]", y_pred[:, :d])
        kappa = vmf._checked_kappa(y_pred[:, d])
        half_squared_distance = 0.5 * ops.sum(ops.square(x - mu), axis=-1)  # 1 - <x, mu>
        return ops.cast(kappa * half_squared_distance - vmf._log_normalizer_plus_kappa(d, kappa),
                        self.dtype)

