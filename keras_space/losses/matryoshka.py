"""Matryoshka: an embedding loss applied to nested prefixes of the embedding."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


@keras_space_export("keras_space.losses.Matryoshka")
class Matryoshka(keras.losses.Loss):
    """Train embeddings whose leading dimensions are an embedding by themselves.

    For prefix widths d_1 < ... < d_m and weights w_1 ... w_m,

        loss = sum_k w_k · loss_fn(y_true, y_pred[..., :d_k], sample_weight)

    (Kusupati et al., 2022; sentence-transformers' `MatryoshkaLoss`): after training,
    the first d_k coordinates of a vector can be kept alone (a smaller index, a faster
    search) at little cost. `loss_fn` is any loss of embeddings: `InfoNCE` (also with
    a learned temperature, one scale shared by every width) or `CoSENT`; cosine
    similarities normalise each prefix. The prefixes are slices of one forward pass, so
    the extra cost is the loss's, not the encoder's; in `GradCacheModel` the sum is the
    loss of pass 2, so the large-batch gradient is exact, as for `loss_fn` alone. The
    reduction (and with it what `GradCacheModel` does under `tf.distribute`) is
    `loss_fn`'s.

    Args:
        loss: the embedding loss, a `keras.losses.Loss` taking y_pred of shape
            (batch, k, dim) (`InfoNCE(...)`, `CoSENT(...)`).
        dims: the prefix widths, increasing positive ints; the largest must not exceed
            the embedding's width (usually it is the width). Defaults to
            `(32, 64, 128, 256, 384)` (MiniLM's 384).
        weights: one weight >= 0 per width (not all 0), or None for all 1.
            Defaults to `None`.
        name: as for any `keras.losses.Loss`.

    Call arguments:
        y_true, sample_weight: passed to `loss` unchanged.
        y_pred: (batch, k, dim) embeddings with dim >= max(dims).
        **kwargs: passed to `loss` (`logit_scale=` for a learned temperature).

    Example:

    ```python
    import numpy as np
    from keras_space.losses import CoSENT, InfoNCE, Matryoshka

    pairs = np.random.default_rng(0).normal(size=(8, 2, 64))
    loss = Matryoshka(InfoNCE(0.05), dims=(16, 32, 64))(None, pairs)
    scores = np.arange(8.0)
    loss = Matryoshka(CoSENT(), dims=(16, 64), weights=(1.0, 2.0))(scores, pairs)
    ```

    References:
        - Kusupati et al., "Matryoshka Representation Learning" (2022),
          https://arxiv.org/abs/2205.13147
    """

    def __init__(self, loss, dims=(32, 64, 128, 256, 384), weights=None, name="matryoshka"):
        if not isinstance(loss, keras.losses.Loss) or isinstance(loss, Matryoshka):
            raise validation.ArgumentTypeError(
                "`loss` must be a keras.losses.Loss of embeddings (batch, k, dim) such as "
                f"InfoNCE() or CoSENT(), not a Matryoshka. Received: loss={loss!r}")
        super().__init__(name=name, reduction=loss.reduction, dtype=None)
        self.loss = loss
        self.dims = validation.int_sequence("dims", dims, minimum=1)
        if any(b <= a for a, b in zip(self.dims[:-1], self.dims[1:], strict=True)):
            raise ValueError(f"`dims` must be increasing. Received: dims={dims!r}")
        if weights is None:
            self.weights = [1.0] * len(self.dims)
        else:
            if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__") \
                    or len(weights) != len(self.dims):
                raise ValueError(f"`weights` must hold one weight per width of dims={self.dims}. "
                                 f"Received: weights={weights!r}")
            self.weights = [validation.non_negative_float("weights", w) for w in weights]
            if not any(self.weights):
                raise ValueError(f"`weights` must not all be 0. Received: weights={weights!r}")

    # a learned temperature belongs to the wrapped loss: GradCacheModel reads it here
    @property
    def learnable_temperature(self):
        return getattr(self.loss, "learnable_temperature", False)

    @property
    def temperature(self):
        return self.loss.temperature

    @property
    def max_logit_scale(self):
        return self.loss.max_logit_scale

    def __call__(self, y_true, y_pred, sample_weight=None, **kwargs):
        if not hasattr(y_pred, "shape"):
            y_pred = ops.convert_to_tensor(y_pred)
        what = f"at most the embeddings' width (the last axis of y_pred, {tuple(y_pred.shape)})"
        width = y_pred.shape[-1]
        if width is None:   # known only at run time
            y_pred = validation.holds("dims", y_pred, ops.shape(y_pred)[-1] >= self.dims[-1], what)
        elif width < self.dims[-1]:
            raise ValueError(f"`dims` must be {what}. Received: dims={self.dims}")
        total = 0.0
        for dim, weight in zip(self.dims, self.weights, strict=True):
            if weight:
                part = self.loss(y_true, y_pred[..., :dim], sample_weight=sample_weight, **kwargs)
                total = total + (part if weight == 1.0 else weight * part)
        return total

    def get_config(self):
        return {"name": self.name, "loss": keras.saving.serialize_keras_object(self.loss),
                "dims": list(self.dims), "weights": list(self.weights)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
