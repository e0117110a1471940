"""InfoNCE: in-batch-negatives contrastive loss (SimCSE / CLIP style)."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

SIMILARITIES = ("cosine", "dot")


@keras_space_export("keras_space.losses.InfoNCE")
class InfoNCE(keras.losses.Loss):
    """In-batch-negatives contrastive loss over (anchor, positive) pairs.

    For a batch of b pairs, logits[i, j] = sim(anchor_i, positive_j) /
    temperature and the loss of pair i is the cross-entropy of row i with
    target i: every other positive in the batch is a negative. With
    `symmetric=True` the positive-to-anchor direction (columns) is averaged
    in, as in CLIP. With labels, pairs whose label equals the anchor's (other
    than itself) are removed from its negatives (duplicate masking). The
    logits and the softmax run in float32 under mixed precision.

    Args:
        temperature: softmax temperature (> 0); 0.05 is SimCSE's. Defaults to `0.05`.
        symmetric: also average the positive-to-anchor loss. Defaults to `False`.
        similarity: "cosine" (embeddings are L2-normalised first) or "dot".
            Defaults to `"cosine"`.
        mask_duplicates: read (batch,) integer labels from `y_true` and drop
            same-label pairs from each other's negatives. Defaults to `False`.
        reduction, name, dtype: as for any `keras.losses.Loss`.
            Defaults to `"sum_over_batch_size"`.

    Call arguments:
        y_true: ignored (None is fine) unless `mask_duplicates`, then the
            (batch,) integer labels.
        y_pred: (batch, 2, dim): anchors at [:, 0], positives at [:, 1].

    Example:

    ```python
    import numpy as np
    from keras_space.losses import InfoNCE

    anchors = np.random.normal(size=(8, 16))
    positives = anchors + 0.1 * np.random.normal(size=(8, 16))
    loss = InfoNCE(temperature=0.05)(None, np.stack([anchors, positives], axis=1))
    ```

    References:
        - Gao et al., "SimCSE: Simple Contrastive Learning of Sentence
          Embeddings", https://arxiv.org/abs/2104.08821
        - Radford et al., "Learning Transferable Visual Models From Natural
          Language Supervision" (CLIP), https://arxiv.org/abs/2103.00020
    """

    def __init__(
        self,
        temperature=0.05,
        symmetric=False,
        similarity="cosine",
        mask_duplicates=False,
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

    def __call__(self, y_true, y_pred, sample_weight=None):
        if y_true is None:
            if self.mask_duplicates:
                raise ValueError("`mask_duplicates=True` needs the labels as y_true; received None.")
            y_true = ops.zeros(ops.shape(y_pred)[:1], "int32")
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def logits(self, anchors, positives):
        """(batch, batch) similarity logits in float32."""
        a = ops.cast(anchors, "float32")
        p = ops.cast(positives, "float32")
        if self.similarity == "cosine":
            a = a / ops.maximum(ops.norm(a, axis=-1, keepdims=True), 1e-12)
            p = p / ops.maximum(ops.norm(p, axis=-1, keepdims=True), 1e-12)
        return ops.matmul(a, ops.transpose(p)) / self.temperature

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 3 or y_pred.shape[1] not in (2, None):
            raise ValueError(
                "InfoNCE expects y_pred of shape (batch, 2, dim): anchors and positives. "
                f"Received shape {y_pred.shape}"
            )
        y_pred = _at_least_one_pair(y_pred)
        logits = self.logits(y_pred[:, 0], y_pred[:, 1])
        batch = ops.shape(logits)[0]
        eye = ops.eye(batch, dtype="bool")
        if self.mask_duplicates:
            labels = _one_label_per_pair(ops.reshape(ops.cast(y_true, "int32"), (-1,)), batch)
            same = ops.equal(labels[:, None], labels[None, :])
            logits = ops.where(ops.logical_and(same, ops.logical_not(eye)), -1e9, logits)
        diag = ops.sum(ops.where(eye, logits, 0.0), axis=1)
        loss = ops.logsumexp(logits, axis=1) - diag
        if self.symmetric:
            loss = 0.5 * (loss + ops.logsumexp(logits, axis=0) - diag)
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "symmetric": self.symmetric,
            "similarity": self.similarity,
            "mask_duplicates": self.mask_duplicates,
        }


def _in_batch_accuracy(anchors, positives, similarity="cosine"):
    """Fraction of anchors whose most similar positive in the batch is their own."""
    logits = InfoNCE(similarity=similarity).logits(anchors, positives)
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
