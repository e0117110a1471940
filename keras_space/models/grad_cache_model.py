"""GradCacheModel: exact large-batch contrastive training in micro-batches.

This module holds what does not depend on the backend: the argument and data
checks, the micro-batch size, the loss of the embeddings (with the learned
temperature and the loss scale) and the metrics. The passes that need
gradients are one small module per backend: `_grad_cache_tf` (`tf.while_loop`,
`tf.GradientTape` with `output_gradients`, replica gathering under
`tf.distribute`) and `_grad_cache_jax` (`jax.vjp` of the stateless embedding).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.losses.info_nce import InfoNCE, _in_batch_accuracy
from keras_space.losses.matryoshka import Matryoshka
from keras_space.utils import validation
from keras_space.utils.batch_coupling import find_batch_coupled_layers


def _seed_states(*models):
    """The RNG state variables (dropout etc.) of the models, without duplicates."""
    seen, states = set(), []
    for model in models:
        for v in model.variables:
            if "seed_generator_state" in v.path and id(v) not in seen:
                seen.add(id(v))
                states.append(v)
    return states


_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")

_X_FORMAT = (
    "x = (anchors, positives, hard negatives...) (each a tensor or a dict of tensors); a "
    "dataset yields ((anchors, positives, ...),) or ((anchors, positives, ...), labels), "
    "since Keras reads a pair (a, b) as (x, y)"
)


def _tuple_parts(x):
    """`x` as a tuple of >= 2 parts (anchors, positives, negatives...), or a ValueError."""
    if not isinstance(x, (tuple, list)) or len(x) < 2:
        what = f"of length {len(x)}" if isinstance(x, (tuple, list)) else f"of type {type(x).__name__}"
        raise ValueError(f"GradCacheModel takes {_X_FORMAT}. Received: x {what}")
    return tuple(x)


def _common_batch_size(parts):
    """(parts, batch): refused unless every tensor holds the same number (> 0) of rows.

    Static sizes are checked at trace time; sizes only known at run time in the graph
    (the returned parts wait for that check).
    """
    sizes = [ops.shape(t)[0] for t in keras.tree.flatten(parts)]
    what = "the same number of rows (> 0) in every anchor, positive and negative tensor"
    if all(isinstance(size, int) for size in sizes):
        if len(set(sizes)) != 1 or sizes[0] == 0:
            raise ValueError(
                f"`x` = (anchors, positives, ...) must hold {what}. Received: batch sizes {sizes}"
            )
        return parts, sizes[0]
    sizes = ops.stack([ops.cast(size, "int32") for size in sizes])
    ok = ops.logical_and(ops.all(ops.equal(sizes, sizes[0])), sizes[0] > 0)
    return validation.holds("x", parts, ok, what), sizes[0]


def _numeric(value):
    """Whether `value` (array, tensor, list) holds numbers."""
    try:
        dtype = getattr(value, "dtype", None) or np.asarray(value).dtype
        return keras.backend.standardize_dtype(dtype).startswith(
            ("float", "int", "uint", "bfloat", "bool"))
    except (TypeError, ValueError):
        return False


def _tuple_weights(sample_weight, batch):
    """`sample_weight` as a (batch,) tensor, refused unless finite and >= 0, one per tuple."""
    weights = ops.convert_to_tensor(sample_weight)
    if len(weights.shape) == 2 and weights.shape[1] == 1:
        weights = weights[:, 0]
    size = ops.shape(weights)[0] if len(weights.shape) == 1 else None
    if size is None or (isinstance(size, int) and isinstance(batch, int) and size != batch):
        raise ValueError(
            f"`sample_weight` must hold one weight per tuple ({batch}). Received: "
            f"sample_weight of shape {tuple(weights.shape)}"
        )
    ok = ops.logical_and(ops.all(ops.isfinite(weights)), ops.all(weights >= 0))
    ok = ops.logical_and(ok, ops.equal(ops.shape(weights)[0], batch))
    return validation.holds("sample_weight", weights, ok, f"finite weights >= 0, one per tuple ({batch})")


class _AtMost(keras.constraints.Constraint):
    """Clips a weight at `limit` after each update (CLIP's clamp of its logit scale)."""

    def __init__(self, limit):
        self.limit = limit

    def __call__(self, w):
        return ops.minimum(w, ops.cast(np.float64(self.limit), w.dtype))

    def get_config(self):
        return {"limit": self.limit}


@keras_space_export("keras_space.models.GradCacheModel")
class GradCacheModel(keras.Model):
    """Train a contrastive loss over a large batch in micro-batches, exactly.

    `train_step` does gradient caching: (1) embed every micro-batch without
    recording gradients, (2) compute the full-batch loss with a tape on the
    embeddings only and keep d loss / d embedding (and the gradient of a
    learned temperature, which only this pass sees), (3) re-embed each
    micro-batch under a tape and back-propagate those cached embedding
    gradients (`tape.gradient(h, weights, output_gradients=g)`), summing, (4)
    apply once. Peak memory is one micro-batch of activations plus the batch's
    embeddings; the cost is one extra forward pass. Dropout sees the same
    masks in passes 1 and 3: the encoders' `SeedGenerator` states are
    snapshotted before each micro-batch in pass 1 and restored before it in
    pass 3. The loss is scaled with `optimizer.scale_loss` inside the tape
    (mixed precision), and the logged loss is the true one.

    Data: `x = (anchors, positives)` or `(anchors, positives, negatives_1, ...,
    negatives_n)`, each a tensor or a dict of tensors with the same number of
    rows: with `InfoNCE` every anchor is scored against every positive and
    every hard negative of the whole batch (sentence-transformers' cached
    multiple-negatives ranking loss; dense-passage retrieval's query with a
    group of passages). Optional `y` (labels, for `InfoNCE(mask_duplicates=True)`)
    and `sample_weight` (one weight per tuple: the weighted loss's large-batch
    gradient, exactly). Under `tf.distribute` the embeddings, labels and
    weights of all replicas are gathered, so the negatives are global.

    A learned temperature: compile with `InfoNCE(learnable_temperature=True)`
    and the model creates the weight `logit_scale` (s, the scale being exp(s),
    CLIP's parametrisation; initialised to log(1 / temperature), clipped at
    log(max_logit_scale) after each update), trained by the optimizer with the
    encoders and saved with the model. `model.temperature` reads it.

    Usage: `model.compile(optimizer, loss=InfoNCE())`, then
    `model.fit((anchors, positives), batch_size=LARGE)`; the last batch may be
    smaller than a multiple of `micro_batch_size`. Any optimizer works,
    including `GradientAccumulator` (then batches of batches).

    Args:
        encoder: a Keras model mapping one input batch to (batch, dim)
            embeddings (used for anchors, and for positives and negatives
            unless `positive_encoder` is given).
        micro_batch_size: samples per micro-batch in passes 1 and 3.
        positive_encoder: optional second tower (a document encoder) for the
            positives and the hard negatives. Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Raises:
        ValueError: an encoder has a trainable BatchNormalization (its output
            for one sample depends on the others in the batch, so no
            micro-batching can be exact; freeze it or use LayerNormalization).

    Example:

    ```python
    import keras
    import numpy as np
    from keras_space.losses import InfoNCE
    from keras_space.models import GradCacheModel

    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(256, 32)).astype("float32")
    positives = anchors + 0.1 * rng.normal(size=(256, 32)).astype("float32")
    hard_negatives = anchors + rng.normal(size=(256, 32)).astype("float32")
    encoder = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                                keras.layers.Dropout(0.1), keras.layers.Dense(16)])
    model = GradCacheModel(encoder, micro_batch_size=32)  # the gradient of batch 128, exactly
    model.compile(optimizer="adam", loss=InfoNCE(temperature=0.05))
    model.fit((anchors, positives), batch_size=128, epochs=1, verbose=0)
    model.fit((anchors, positives, hard_negatives), batch_size=128, verbose=0)  # tuples
    ```

    References:
        - Gao et al., "Scaling Deep Contrastive Learning Batch Size under
          Memory Limited Setup" (GradCache), https://arxiv.org/abs/2101.06983
    """

    def __init__(self, encoder, micro_batch_size, positive_encoder=None, **kwargs):
        super().__init__(**kwargs)
        micro_batch_size = validation.positive_int("micro_batch_size", micro_batch_size)
        for name, model in (("encoder", encoder), ("positive_encoder", positive_encoder)):
            if model is None:
                continue
            if not isinstance(model, keras.layers.Layer):
                raise ValueError(f"`{name}` must be a Keras model or layer. Received: {name}={model!r}")
            coupled = find_batch_coupled_layers(model)
            if coupled:
                raise ValueError(
                    f"`{name}` has batch-coupled layers {[layer.name for layer in coupled]}: in "
                    "training they normalise with statistics of the whole batch, so no "
                    "micro-batching can reproduce the large-batch gradient. Freeze them "
                    "(trainable=False) or use LayerNormalization/GroupNormalization."
                )
        self.encoder = encoder
        self.positive_encoder = positive_encoder
        self.micro_batch_size = micro_batch_size
        self.logit_scale = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # train_step never calls the model itself: it is built when its
        # encoders are, so that saving keeps the weights and the optimizer state.
        if all(t.built for t in self._towers()):
            self.built = True

    def _towers(self):
        return self.encoder, self.positive_encoder or self.encoder

    def _embedding_dtype(self):
        """float64 for float64 encoders, else float32 (embeddings never in half precision)."""
        return "float64" if self.encoder.compute_dtype == "float64" else "float32"

    def _embed(self, parts, training):
        """(batch, k, dim): part 0 through the first tower, the others through the second."""
        first, second = self._towers()
        dtype = self._embedding_dtype()
        embeddings = [first(parts[0], training=training)]
        embeddings += [second(part, training=training) for part in parts[1:]]
        return ops.stack([ops.cast(e, dtype) for e in embeddings], axis=1)

    def call(self, inputs, training=None):
        parts = _tuple_parts(inputs)
        # what `export` serves (Keras records no input shapes for a model built eagerly);
        # untracked: a tracked dict would become a wrapper the exporter cannot read
        object.__setattr__(self, "_called_with", keras.tree.map_structure(
            lambda t: keras.KerasTensor((None, *t.shape[1:]), keras.backend.standardize_dtype(t.dtype)),
            parts))
        return self._embed(parts, training)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """`keras.Model.export`, serving the tuple structure of the last call.

        To serve sentence embeddings, export the encoder itself
        (`model.encoder.export(path)`): this one takes (anchors, positives, ...).
        """
        if input_signature is None:
            called = getattr(self, "_called_with", None)
            if called is None:
                raise ValueError(
                    "GradCacheModel.export serves the structure of a call: call the model once "
                    "(model((anchors, positives))) or pass `input_signature` (to serve "
                    "embeddings, export the encoder: model.encoder.export(path))."
                )
            import tensorflow as tf  # a SavedModel is TensorFlow's

            input_signature = [keras.tree.map_structure(
                lambda spec: tf.TensorSpec(spec.shape, spec.dtype), called)]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`; with `InfoNCE(learnable_temperature=True)` it also
        creates the `logit_scale` weight (once: compiling again keeps its value)."""
        super().compile(*args, **kwargs)
        loss = self._contrastive_loss()
        if getattr(loss, "learnable_temperature", False) and self.logit_scale is None:
            self.logit_scale = self.add_weight(
                shape=(),
                name="logit_scale",
                initializer=keras.initializers.Constant(np.float64(math.log(1.0 / loss.temperature))),
                constraint=_AtMost(math.log(loss.max_logit_scale)),
            )

    def compile_from_config(self, config):
        """Recompile on load (Keras skips models whose `compile` is overridden)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def temperature(self):
        """The loss's temperature: the learned one (1 / exp(logit_scale)) if it is learned."""
        if self.logit_scale is not None:
            return float(1.0 / ops.exp(ops.convert_to_tensor(self.logit_scale)))
        return self._contrastive_loss().temperature

    @property
    def metrics(self):
        """`loss`, and with `InfoNCE` the in-batch retrieval `accuracy` (a ranking loss of
        scored pairs, such as `CoSENT`, has no such accuracy: the loss only)."""
        if self._infonce():
            return [self.loss_tracker, self.accuracy_tracker]
        return [self.loss_tracker]

    def _infonce(self):
        """Whether the loss is InfoNCE (also inside a Matryoshka): its targets, if any, are
        labels, and its in-batch retrieval accuracy is logged (at the full width)."""
        loss = self._contrastive_loss()
        return isinstance(loss.loss if isinstance(loss, Matryoshka) else loss, InfoNCE)

    def _contrastive_loss(self):
        loss = self.loss
        if loss is None:
            return InfoNCE()
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError("GradCacheModel takes a single loss (e.g. InfoNCE()).")
        return keras.losses.get(loss) if isinstance(loss, str) else loss

    def _loss_value(self, loss_fn, y, reps, sample_weight):
        """The loss of embeddings `reps`, with the learned scale when there is one."""
        if getattr(loss_fn, "learnable_temperature", False):
            if self.logit_scale is None:
                raise ValueError(
                    "The loss has learnable_temperature=True but this GradCacheModel has no "
                    "`logit_scale` weight: compile the model with that loss (compile creates it)."
                )
            scale = ops.exp(ops.cast(self.logit_scale, reps.dtype))
            return loss_fn(y, reps, sample_weight=sample_weight, logit_scale=scale)
        return loss_fn(y, reps, sample_weight=sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The contrastive loss of embeddings `y_pred` (Keras's symbolic build calls it)."""
        return self._loss_value(self._contrastive_loss(), y, y_pred, sample_weight)

    def _prepared(self, x, y=None, sample_weight=None):
        """(parts, batch size, y, sample weights), checked."""
        parts = keras.tree.map_structure(ops.convert_to_tensor, _tuple_parts(x))
        parts, batch = _common_batch_size(parts)
        if sample_weight is not None:
            sample_weight = _tuple_weights(sample_weight, batch)
        return parts, batch, y, sample_weight

    def _prepared_data(self, data):
        return self._prepared(*keras.utils.unpack_x_y_sample_weight(data))

    def _scaled_loss(self, reps, y, sample_weight, replicas=1):
        """(loss, scaled loss) of the batch's embeddings `reps` (pass 2).

        With `replicas` > 1 (`tf.distribute`, the embeddings gathered from every
        replica) a mean loss is multiplied by their count: Keras divides mean losses
        by it, assuming each replica sees its own part of the batch, and this loss
        is global. The scaled loss is `optimizer.scale_loss`'s (mixed precision).
        """
        loss_fn = self._contrastive_loss()
        loss = self._loss_value(loss_fn, y, reps, sample_weight)
        if replicas > 1 and getattr(loss_fn, "reduction", None) in _MEAN_REDUCTIONS:
            loss = loss * float(replicas)
        scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        return loss, scaled

    def _finish_metrics(self, loss, reps):
        self.loss_tracker.update_state(loss)
        if self._infonce():
            self.accuracy_tracker.update_state(_in_batch_accuracy(reps))
        return {m.name: m.result() for m in self.metrics}

    def grad_cache_gradients(self, x, y=None, sample_weight=None):
        """(loss, scaled loss, gradients, embeddings) by gradient caching.

        `x` = (anchors, positives, negatives...); the gradients (in the order of
        `trainable_weights`) are of the scaled loss (what the optimizer
        expects); `loss` is the true one. Seed states end as after pass 1.
        """
        parts, batch, y, sample_weight = self._prepared(x, y, sample_weight)
        if keras.backend.backend() == "jax":
            from keras_space.models import _grad_cache_jax

            values = [[v.value for v in variables] for variables in (
                self.trainable_variables, self.non_trainable_variables,
                self.optimizer.variables if self.optimizer is not None else [])]
            loss, scaled, grads, reps, after = _grad_cache_jax.gradients(
                self, values, parts, batch, y, sample_weight)
            for variable, value in zip(self.non_trainable_variables, after, strict=True):
                variable.assign(value)
            return loss, scaled, grads, reps
        from keras_space.models import _grad_cache_tf

        return _grad_cache_tf.gradients(self, parts, batch, y, sample_weight)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, **kwargs):
        """`keras.Model.fit` (the same arguments, in its order); `sample_weight` weights
        the tuples, `class_weight` is refused.

        Keras drops `sample_weight` when `y` is None (before `train_step` sees the
        data), so then `y` is set to dummy labels (the loss ignores them unless
        `mask_duplicates`).
        """
        if class_weight is not None:
            raise ValueError(
                "GradCacheModel.fit does not support `class_weight`: a contrastive loss has no "
                "classes (pass per-tuple `sample_weight` instead). Received: class_weight of "
                f"type {type(class_weight).__name__}"
            )
        if isinstance(x, (tuple, list)) and any(part is None for part in x):
            raise ValueError(
                f"GradCacheModel takes {_X_FORMAT}; every part must be data. Received: x with "
                f"None at positions {[i for i, part in enumerate(x) if part is None]}"
            )
        if sample_weight is not None and not _numeric(sample_weight):
            raise validation.ArgumentTypeError(
                "`sample_weight` must be numbers, one weight per tuple. "
                f"Received: sample_weight={sample_weight!r:.80}"
            )
        if isinstance(sample_weight, (np.ndarray, list, tuple)):
            # checked now, not inside the compiled step: on JAX a failed check there
            # aborts fit after Keras handed the step the model's variables
            weights = np.asarray(sample_weight, "float64")
            validation.holds("sample_weight", weights,
                             np.isfinite(weights) & (weights >= 0), "finite weights >= 0")
        if sample_weight is not None and y is None:
            if not self._infonce():  # the loss's targets are data
                raise ValueError(
                    f"GradCacheModel.fit with {type(self._contrastive_loss()).__name__} needs its "
                    "targets as `y` (e.g. CoSENT's gold scores, one per pair). Received: y=None")
            y = ops.zeros((ops.shape(sample_weight)[0],), "int32")
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                           callbacks=callbacks, validation_split=validation_split,
                           validation_data=validation_data, shuffle=shuffle,
                           sample_weight=sample_weight, **kwargs)

    def train_step(self, *args):
        """One optimizer step by gradient caching: `train_step(data)` on TensorFlow,
        `train_step(state, data)` (values in, values out) on JAX."""
        if keras.backend.backend() == "jax":
            from keras_space.models import _grad_cache_jax

            return _grad_cache_jax.train_step(self, *args)
        (data,) = args
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss, _, grads, reps = self.grad_cache_gradients(x, y, sample_weight)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._finish_metrics(loss, reps)

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            from keras_space.models import _grad_cache_jax

            return _grad_cache_jax.test_step(self, *args)
        (data,) = args
        parts, _, y, sample_weight = self._prepared_data(data)
        reps = self(parts, training=False)
        return self._finish_metrics(self.compute_loss(y=y, y_pred=reps, sample_weight=sample_weight),
                                    reps)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "micro_batch_size": self.micro_batch_size,
            "positive_encoder": keras.saving.serialize_keras_object(self.positive_encoder)
            if self.positive_encoder is not None
            else None,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"), custom_objects=custom_objects)
        positive = config.pop("positive_encoder", None)
        if positive is not None:
            positive = keras.saving.deserialize_keras_object(positive, custom_objects=custom_objects)
        return cls(encoder, positive_encoder=positive, **config)
