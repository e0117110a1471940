"""InfoNCE: in-batch-negatives contrastive loss (SimCSE / CLIP style)."""

import keras
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.ops import _dtype_safe as safe
from keras_space.utils import validation

SIMILARITIES = ("cosine", "dot")


@keras_space_export("keras_space.losses.InfoNCE")
class InfoNCE(keras.losses.Loss):
    """In-batch-negatives contrastive loss over (anchor, positive, hard negatives...) tuples.

    For a batch of b tuples (anchor_i, positive_i, negative_i1, ..., negative_in),
    every anchor is scored against the b·(1 + n) candidates of the whole batch
    (all positives, then all first negatives, ...): logits[i, j] =
    sim(anchor_i, candidate_j) / temperature, and the loss of tuple i is the
    cross-entropy of row i with target i (its own positive). Every other
    positive and every hard negative of the batch is a negative: this is
    sentence-transformers' MultipleNegativesRankingLoss, and SimCSE/CLIP's loss
    for n = 0. With `symmetric=True` the positive-to-anchor direction (each
    positive against the b anchors) is averaged in, as in CLIP. With labels,
    the positives of other tuples whose label equals the anchor's are removed
    from its negatives (duplicate masking; hard negatives stay). The logits
    and the softmax run in float32 under mixed precision, in float64 for float64
    embeddings (unless a `dtype` is given).

    A learned temperature (`learnable_temperature=True`, CLIP's logit scale):
    the loss then takes the scale exp(s) from the model that owns the weight s
    (`GradCacheModel` creates it at `compile`, initialised to
    log(1 / temperature), kept ≤ log(`max_logit_scale`) after each update as
    in CLIP, saved with the model). Called by itself it needs `logit_scale=`.

    Args:
        temperature: softmax temperature (> 0); 0.05 is SimCSE's, 0.07 CLIP's
            initial one. Defaults to `0.05`.
        symmetric: also average the positive-to-anchor loss. Defaults to `False`.
        similarity: "cosine" (embeddings are L2-normalised first) or "dot".
            Defaults to `"cosine"`.
        mask_duplicates: read (batch,) integer labels from `y_true` and drop
            same-label tuples' positives from each other's negatives. Defaults
            to `False`.
        learnable_temperature: learn the temperature (see above), starting at
            `temperature`. Defaults to `False`.
        max_logit_scale: the largest 1 / temperature the learned one may reach
            (CLIP's 100). Defaults to `100.0`.
        reduction: as for any `keras.losses.Loss`.
        name: as for any `keras.losses.Loss`.
        dtype: as for any `keras.losses.Loss`.
            Defaults to `"sum_over_batch_size"`. A `sample_weight` weights
            each tuple's loss (Keras's reductions).

    Call arguments:
        y_true: ignored (None is fine) unless `mask_duplicates`, then the
            (batch,) integer labels.
        y_pred: (batch, 2 + n, dim): anchors at [:, 0], positives at [:, 1],
            hard negatives at [:, 2:].
        sample_weight: optional (batch,) weights of the tuples.
        logit_scale: with `learnable_temperature`, the scale 1 / temperature
            (a scalar tensor; `GradCacheModel` passes it). Defaults to `None`.

    Example:

    ```python
    import numpy as np
    from keras_space.losses import InfoNCE

    anchors = np.random.normal(size=(8, 16))
    positives = anchors + 0.1 * np.random.normal(size=(8, 16))
    loss = InfoNCE(temperature=0.05)(None, np.stack([anchors, positives], axis=1))
    negatives = np.random.normal(size=(8, 16))          # one hard negative each
    loss = InfoNCE(0.05)(None, np.stack([anchors, positives, negatives], axis=1))
    ```

    References:
        - Gao et al., "SimCSE: Simple Contrastive Learning of Sentence
          Embeddings", https://arxiv.org/abs/2104.08821
        - Radford et al., "Learning Transferable Visual Models From Natural
          Language Supervision" (CLIP), https://arxiv.org/abs/2103.00020
        - Henderson et al., "Efficient Natural Language Response Suggestion for
          Smart Reply" (multiple negatives ranking), https://arxiv.org/abs/1705.00652
    """

    def __init__(
        self,
        temperature=0.05,
        symmetric=False,
        similarity="cosine",
        mask_duplicates=False,
        learnable_temperature=False,
        max_logit_scale=100.0,
        reduction="sum_over_batch_size",
        name="info_nce",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        # 1e-4: cosine / temperature stays within float32's logsumexp (1e-45 gave NaN);
        # 1e4: above it every logit is ~0 and the loss is constant (no gradient).
        self.temperature = validation.positive_float("temperature", temperature, minimum=1e-4, maximum=1e4)
        self.symmetric = validation.strict_bool("symmetric", symmetric)
        self.similarity = validation.choice("similarity", similarity, SIMILARITIES)
        self.mask_duplicates = validation.strict_bool("mask_duplicates", mask_duplicates)
        self.learnable_temperature = validation.strict_bool("learnable_temperature", learnable_temperature)
        self.max_logit_scale = validation.positive_float("max_logit_scale", max_logit_scale, minimum=1e-4, maximum=1e4)
        if self.learnable_temperature and 1.0 / self.temperature > self.max_logit_scale * (1 + 1e-12):
            raise ValueError(
                "`temperature` (the learned temperature's initial value) must be at least "
                f"1 / max_logit_scale = {1.0 / self.max_logit_scale}. Received: temperature={temperature}"
            )
        self._logit_scale = None
        self._float64_follows_inputs = dtype is None

    def __call__(self, y_true, y_pred, sample_weight=None, logit_scale=None):
        if y_true is None:
            if self.mask_duplicates:
                raise ValueError("`mask_duplicates=True` needs the labels as y_true; received None.")
            y_true = ops.zeros(ops.shape(y_pred)[:1], "int32")
        if self.learnable_temperature and logit_scale is None:
            raise ValueError(
                "`learnable_temperature=True`: the temperature is a model's weight, so the "
                "loss needs `logit_scale=` (GradCacheModel passes it; in a plain model "
                "compile the loss with a fixed temperature). Received: logit_scale=None"
            )
        if logit_scale is not None and not self.learnable_temperature:
            raise ValueError(
                "`logit_scale` is only taken with `learnable_temperature=True` (this loss's "
                f"temperature is fixed at {self.temperature}). Received: logit_scale={logit_scale!r}"
            )
        if isinstance(logit_scale, (int, float)):
            logit_scale = validation.positive_float("logit_scale", logit_scale)
        elif logit_scale is not None:  # a tensor: GradCacheModel's exp(weight), or a user's
            logit_scale = validation.holds(
                "logit_scale", logit_scale,
                ops.logical_and(ops.isfinite(logit_scale), logit_scale > 0),
                "a positive finite scale 1 / temperature",
            )
        # Keras's Loss casts its inputs to floatx (float32) unless told a dtype: float64
        # embeddings would silently lose their precision, so they keep it here.
        dtype = self._dtype
        if self._float64_follows_inputs and _dtype_of(y_pred) == "float64":
            self._dtype = "float64"
        self._logit_scale = logit_scale
        try:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        finally:
            self._logit_scale, self._dtype = None, dtype

    def logits(self, anchors, candidates, logit_scale=None):
        """(batch, candidates) similarity logits in float32 (float64 for float64 inputs)."""
        a = _at_least_float32(anchors)
        p = ops.cast(candidates, a.dtype)
        if self.similarity == "cosine":
            a, p = _unit(a), _unit(p)
        scores = ops.matmul(a, ops.transpose(p))
        if logit_scale is None:
            return scores / self.temperature
        return scores * ops.cast(logit_scale, scores.dtype)

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 3 or (y_pred.shape[1] is not None and y_pred.shape[1] < 2):
            raise ValueError(
                "InfoNCE expects y_pred of shape (batch, 2 + hard negatives, dim): anchors, "
                f"positives and any hard negatives. Received shape {y_pred.shape}"
            )
        y_pred = _at_least_one_pair(y_pred)
        logits = self.logits(y_pred[:, 0], _candidates(y_pred), self._logit_scale)
        batch = ops.shape(logits)[0]
        positives = logits[:, :batch]
        eye = ops.eye(batch, dtype="bool")
        if self.mask_duplicates:
            labels = _one_label_per_pair(ops.reshape(ops.cast(y_true, "int32"), (-1,)), batch)
            same = ops.equal(labels[:, None], labels[None, :])
            positives = ops.where(ops.logical_and(same, ops.logical_not(eye)), -1e9, positives)
            logits = ops.concatenate([positives, logits[:, batch:]], axis=1)
        diag = ops.sum(ops.where(eye, positives, 0.0), axis=1)
        loss = ops.logsumexp(logits, axis=1) - diag
        if self.symmetric:
            loss = 0.5 * (loss + ops.logsumexp(positives, axis=0) - diag)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "symmetric": self.symmetric,
            "similarity": self.similarity,
            "mask_duplicates": self.mask_duplicates,
            "learnable_temperature": self.learnable_temperature,
            "max_logit_scale": self.max_logit_scale,
        }


def _dtype_of(x):
    dtype = getattr(x, "dtype", None)
    return keras.backend.standardize_dtype(dtype if dtype is not None else np.asarray(x).dtype)


def _at_least_float32(x):
    """`x` as a tensor in float32, or float64 if it is float64 (logits never in half precision)."""
    x = ops.convert_to_tensor(x)
    return x if x.dtype == "float64" else ops.cast(x, "float32")


def _unit(x):
    """Rows of `x` over their norm, the norm floored at 1e-12 (a zero row stays zero)."""
    return x / ops.maximum(safe.norm(x, axis=-1, keepdims=True), 1e-12)


def _candidates(y_pred):
    """(batch·(k−1), dim): all positives, then all first hard negatives, ... of (batch, k, dim)."""
    rest = ops.transpose(y_pred[:, 1:], (1, 0, 2))
    return ops.reshape(rest, (-1, ops.shape(y_pred)[2]))


def _in_batch_accuracy(y_pred, similarity="cosine"):
    """Fraction of anchors whose most similar candidate in the batch is their own positive."""
    logits = InfoNCE(similarity=similarity).logits(y_pred[:, 0], _candidates(y_pred))
    return ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=1), ops.arange(ops.shape(logits)[0])), "float32"))


def _at_least_one_pair(y_pred):
    """`y_pred`, refused when its batch is empty (a contrastive loss needs a pair)."""
    batch = ops.shape(y_pred)[0]
    what = "at least one (anchor, positive) pair: an empty batch has no contrastive loss"
    if isinstance(batch, int):
        if batch == 0:
            raise ValueError(f"`y_pred` must hold {what}. Received: y_pred of shape {tuple(y_pred.shape)}")
        return y_pred
    return validation.holds("y_pred", y_pred, ops.greater(batch, 0), what)


def _one_label_per_pair(labels, batch):
    """`labels` (flat), refused unless there is one per pair (`mask_duplicates`)."""
    what = "one label per (anchor, positive) pair when mask_duplicates=True"
    size = ops.shape(labels)[0]
    if isinstance(size, int) and isinstance(batch, int):
        if size != batch:
            raise ValueError(f"`y_true` must hold {what} ({batch}). Received: {size} labels")
        return labels
    return validation.holds("y_true", labels, ops.equal(size, batch), what)
