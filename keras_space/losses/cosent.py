"""CoSENT: a ranking loss for pairs with graded similarity scores."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.losses.info_nce import _at_least_float32, _dtype_of, _unit
from keras_space.utils import validation


@keras_space_export("keras_space.losses.CoSENT")
class CoSENT(keras.losses.Loss):
    """CoSENT (Su Jianlin, 2022): rank the cosines of pairs by their gold scores.

    For a batch of pairs (u_i, v_i) with gold scores s_i and cosines c_i = cos(u_i, v_i),

        loss = log(1 + sum over (i, j) with s_i > s_j of exp(scale (c_j - c_i)))

    (sentence-transformers' `CoSENTLoss`): every pair that should be more similar than
    another is pushed above it, whatever the scores' scale, so STS and SICK scores
    (0-5, 1-5) or any monotone transform of them train the same. One value for the whole
    batch: it couples every pair with every other, which is what `GradCacheModel` is
    for (pairs in micro-batches, the full-batch gradient exactly).

    `sample_weight` weights pairs: each term (i, j) is weighted by w_i w_j, so an integer
    weight is the pair repeated and a weight 0 leaves it out. A batch with no two
    different scores (one pair, or equal scores) has no ordering to learn: the loss is
    0 and its gradient 0. Computed in float32 (float64 for float64 embeddings), the
    cosines with |u| and |v| floored at 1e-12 (a zero embedding has cosine 0).

    Args:
        scale: lambda, the inverse temperature of the cosine differences (> 0;
            CoSENT's and sentence-transformers' 20). Defaults to `20.0`.
        name: as for any `keras.losses.Loss`.
        dtype: as for any `keras.losses.Loss` (None: float32, or float64 for float64
            embeddings).

    Call arguments:
        y_true: (batch,) or (batch, 1) gold scores, finite (NaN or inf is a
            `ValueError` naming `y_true`).
        y_pred: (batch, 2, dim): the two embeddings of each pair.
        sample_weight: optional (batch,) weights >= 0.

    Example:

    >>> import numpy as np
    >>> from keras_space.losses import CoSENT
    >>> u = np.array([[1.0, 0.0], [1.0, 0.0]])
    >>> v = np.array([[1.0, 0.0], [0.0, 1.0]])              # cosines 1 and 0
    >>> pairs = np.stack([u, v], axis=1)
    >>> round(float(CoSENT()(np.array([5.0, 1.0]), pairs)), 6)   # log(1 + e^-20): ranked
    0.0
    >>> round(float(CoSENT()(np.array([1.0, 5.0]), pairs)), 6)   # log(1 + e^20): inverted
    20.0

    References:
        - Su Jianlin, "CoSENT: a more efficient sentence vector scheme than
          Sentence-BERT" (2022), https://kexue.fm/archives/8847
    """

    def __init__(self, scale=20.0, name="cosent", dtype=None):
        # reduction "sum": one value per batch, never divided again (GradCacheModel
        # multiplies only mean reductions by the replica count)
        super().__init__(name=name, reduction="sum", dtype=dtype)
        self.scale = validation.positive_float("scale", scale, maximum=1e4)
        self._float64_follows_inputs = dtype is None

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = _at_least_float32(y_pred)
        dtype = self.dtype if not (self._float64_follows_inputs and _dtype_of(y_pred) == "float64") \
            else "float64"
        y_pred = ops.cast(y_pred, dtype)
        if len(y_pred.shape) != 3 or (y_pred.shape[1] is not None and y_pred.shape[1] != 2):
            raise ValueError("CoSENT expects y_pred of shape (batch, 2, dim): the two embeddings "
                             f"of each pair. Received: y_pred of shape {tuple(y_pred.shape)}")
        if y_true is None:
            raise ValueError("CoSENT needs the gold scores as y_true, one per pair. Received: None")
        scores = ops.cast(ops.convert_to_tensor(y_true), dtype)
        if len(scores.shape) == 2 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if len(scores.shape) != 1 or (scores.shape[0] is not None and y_pred.shape[0] is not None
                                      and scores.shape[0] != y_pred.shape[0]):
            raise ValueError("CoSENT takes one gold score per pair: y_true of shape (batch,) or "
                             f"(batch, 1). Received: y_true of shape {tuple(scores.shape)} for "
                             f"y_pred of shape {tuple(y_pred.shape)}")
        scores = validation.all_finite("y_true", scores)
        cosines = ops.sum(_unit(y_pred[:, 0]) * _unit(y_pred[:, 1]), axis=-1)
        # term (i, j): scale (c_j - c_i) + log(w_i w_j), kept where s_i > s_j and w_i w_j > 0
        keep = scores[:, None] > scores[None, :]
        terms = self.scale * (cosines[None, :] - cosines[:, None])
        if sample_weight is not None:
            weights = ops.cast(ops.convert_to_tensor(sample_weight), dtype)
            weights = ops.reshape(weights, (-1,))
            weights = validation.holds("sample_weight", weights,
                                       ops.logical_and(ops.isfinite(weights), weights >= 0),
                                       "finite weights >= 0, one per pair")
            pair_weights = weights[:, None] * weights[None, :]
            keep = ops.logical_and(keep, pair_weights > 0)
            terms = terms + ops.log(ops.where(keep, pair_weights, ops.ones_like(pair_weights)))
        lowest = ops.convert_to_tensor(-1e30, dtype)
        terms = ops.where(keep, terms, lowest)  # exp(-1e30) = 0: left out, finite gradients
        flat = ops.concatenate([ops.zeros((1,), dtype), ops.reshape(terms, (-1,))], axis=0)
        return ops.logsumexp(flat)

    def get_config(self):
        return {"name": self.name, "dtype": None if self._float64_follows_inputs else self.dtype,
                "scale": self.scale}
