"""GradCacheModel: exact large-batch contrastive training in micro-batches.

TensorFlow-only: the three passes run in `tf.while_loop`s with
`tf.TensorArray`s, gradients come from `tf.GradientTape` (with
`output_gradients`, which `keras.ops` has no equivalent of), and under
`tf.distribute` the embeddings are all-gathered with the replica context's
collectives. Stacking, casting and slicing outside those use `keras.ops` /
`keras.tree`.
"""

import inspect

import keras
import tensorflow as tf
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.losses.info_nce import InfoNCE, _in_batch_accuracy
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


def _common_batch_size(anchors, positives):
    """(anchors, batch): refused unless every tensor holds the same number (> 0) of rows.

    Static sizes are checked at trace time; sizes only known at run time in the graph
    (the returned anchors wait for that check).
    """
    sizes = [ops.shape(t)[0] for t in keras.tree.flatten((anchors, positives))]
    what = "the same number of rows (> 0) in every anchor and positive tensor"
    if all(isinstance(size, int) for size in sizes):
        if len(set(sizes)) != 1 or sizes[0] == 0:
            raise ValueError(
                f"`x` = (anchors, positives) must hold {what}. Received: batch sizes {sizes}"
            )
        return anchors, sizes[0]
    sizes = tf.stack([tf.cast(size, tf.int32) for size in sizes])
    ok = tf.logical_and(tf.reduce_all(tf.equal(sizes, sizes[0])), sizes[0] > 0)
    return validation.holds("x", anchors, ok, what), sizes[0]


def _gather_across_replicas(local):
    """(all replicas' rows concatenated, this replica's row offset)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return local, 0
    sizes = ctx.all_gather(tf.shape(local)[:1], axis=0)
    replica = ctx.replica_id_in_sync_group
    offset = tf.reduce_sum(sizes[:replica])
    return ctx.all_gather(local, axis=0), offset


@keras_space_export("keras_space.models.GradCacheModel")
class GradCacheModel(keras.Model):
    """Train a contrastive loss over a large batch in micro-batches, exactly.

    `train_step` does gradient caching: (1) embed every micro-batch without
    recording gradients, (2) compute the full-batch loss with a tape on the
    embeddings only and keep d loss / d embedding, (3) re-embed each
    micro-batch under a tape and back-propagate those cached embedding
    gradients (`tape.gradient(h, weights, output_gradients=g)`), summing, (4)
    apply once. Peak memory is one micro-batch of activations plus the batch's
    embeddings; the cost is one extra forward pass. Dropout sees the same
    masks in passes 1 and 3: the encoders' `SeedGenerator` states are
    snapshotted before each micro-batch in pass 1 and restored before it in
    pass 3. The loss is scaled with `optimizer.scale_loss` inside the tape
    (mixed precision), and the logged loss is the true one.

    Usage: `model.compile(optimizer, loss=InfoNCE())`, then
    `model.fit((anchors, positives), batch_size=LARGE)`; the last batch may be
    smaller than a multiple of `micro_batch_size`. Any optimizer works,
    including `GradientAccumulator` (then batches of batches).

    Args:
        encoder: a Keras model mapping one input batch to (batch, dim)
            embeddings (used for anchors, and for positives unless
            `positive_encoder` is given).
        micro_batch_size: samples per micro-batch in passes 1 and 3.
        positive_encoder: optional second tower for the positives. Defaults to `None`.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Raises:
        ValueError: an encoder has a trainable BatchNormalization (its output
            for one sample depends on the others in the batch, so no
            micro-batching can be exact; freeze it or use LayerNormalization).

    Example:

    ```python
    import keras
    from keras_space.losses import InfoNCE
    from keras_space.models import GradCacheModel

    encoder = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                                keras.layers.Dropout(0.1), keras.layers.Dense(16)])
    model = GradCacheModel(encoder, micro_batch_size=32)
    model.compile(optimizer="adam", loss=InfoNCE(temperature=0.05))
    model.fit((anchors, positives), batch_size=512, epochs=1)
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
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        # train_step never calls the model itself: it is built when its
        # encoders are, so that saving keeps the weights and the optimizer state.
        if all(t.built for t in self._towers()):
            self.built = True

    def _towers(self):
        return self.encoder, self.positive_encoder or self.encoder

    def call(self, inputs, training=None):
        anchors, positives = inputs
        first, second = self._towers()
        a = first(anchors, training=training)
        p = second(positives, training=training)
        return ops.stack([ops.cast(a, "float32"), ops.cast(p, "float32")], axis=1)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def _contrastive_loss(self):
        loss = self.loss
        if loss is None:
            return InfoNCE()
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError("GradCacheModel takes a single loss (e.g. InfoNCE()).")
        return keras.losses.get(loss) if isinstance(loss, str) else loss

    def _chunks(self, batch):
        m = self.micro_batch_size
        return (batch + m - 1) // m

    def _encode_chunk(self, anchors, positives, i, training=True):
        m = self.micro_batch_size

        def chunk(tree):
            return keras.tree.map_structure(lambda t: t[i * m : (i + 1) * m], tree)

        first, second = self._towers()
        a = first(chunk(anchors), training=training)
        p = second(chunk(positives), training=training)
        return ops.cast(a, "float32"), ops.cast(p, "float32")

    def grad_cache_gradients(self, anchors, positives, y=None):
        """(loss, scaled loss, gradients, embeddings) by gradient caching.

        The gradients are of the scaled loss (what the optimizer expects);
        `loss` is the true one. Seed states end as after pass 1.
        """
        anchors = keras.tree.map_structure(ops.convert_to_tensor, anchors)
        positives = keras.tree.map_structure(ops.convert_to_tensor, positives)
        anchors, batch = _common_batch_size(anchors, positives)
        n = self._chunks(batch)
        states = _seed_states(*self._towers())
        weights = self.trainable_weights
        loss_fn = self._contrastive_loss()

        # Pass 1: embeddings without a tape; snapshot RNG states per chunk.
        snapshots = [tf.TensorArray(s.dtype, size=n) for s in states]
        rank2 = tf.TensorShape([None, None])
        embeds_a = tf.TensorArray(tf.float32, size=n, infer_shape=False, element_shape=rank2)
        embeds_p = tf.TensorArray(tf.float32, size=n, infer_shape=False, element_shape=rank2)

        def pass1(i, snaps, ea, ep):
            snaps = [ta.write(i, s.value) for ta, s in zip(snaps, states, strict=True)]
            a, p = self._encode_chunk(anchors, positives, i)
            return i + 1, snaps, ea.write(i, a), ep.write(i, p)

        _, snapshots, embeds_a, embeds_p = tf.while_loop(
            lambda i, *_: i < n, pass1, (tf.constant(0), snapshots, embeds_a, embeds_p)
        )
        after = [s.value for s in states]
        local_reps = tf.stack([embeds_a.concat(), embeds_p.concat()], axis=1)

        # Pass 2: the full-batch loss on the embeddings only. Under
        # tf.distribute the embeddings of all replicas are gathered first, so
        # the negatives are global; each replica then keeps the slice of
        # d loss / d embeddings that belongs to its own samples (no gradient
        # flows through the collective), and the optimizer's one all-reduce
        # sums the replicas' parameter gradients.
        reps, offset = _gather_across_replicas(local_reps)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            tape.watch(reps)
            loss = loss_fn(y, reps)
            if replicas > 1 and getattr(loss_fn, "reduction", None) in _MEAN_REDUCTIONS:
                # Keras divides mean losses by the replica count, assuming each
                # replica sees its own part of the batch; this loss is global.
                loss = loss * float(replicas)
            scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        cache = tape.gradient(scaled, reps)[offset : offset + batch]

        # Pass 3: re-embed each chunk under a tape with the same RNG states and
        # back-propagate the cached embedding gradients.
        m = self.micro_batch_size
        zeros = [tf.zeros(w.shape, w.dtype) for w in weights]

        def pass3(i, grads):
            for s, ta in zip(states, snapshots, strict=True):
                s.assign(ta.read(i))
            with tf.GradientTape() as chunk_tape:
                a, p = self._encode_chunk(anchors, positives, i)
                h = ops.stack([a, p], axis=1)
            g = cache[i * m : (i + 1) * m]
            parts = chunk_tape.gradient(h, weights, output_gradients=g)
            grads = [
                acc if part is None else acc + tf.cast(tf.convert_to_tensor(part), acc.dtype)
                for acc, part in zip(grads, parts, strict=True)
            ]
            return i + 1, grads

        _, grads = tf.while_loop(lambda i, *_: i < n, pass3, (tf.constant(0), zeros))
        for s, value in zip(states, after, strict=True):
            s.assign(value)
        return loss, scaled, grads, reps

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, refusing `sample_weight`/`class_weight` (see `train_step`).

        Keras drops `sample_weight` silently when `y` is None, before
        `train_step` sees the data, so the refusal is made here too.
        """
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        for name in ("sample_weight", "class_weight"):
            if bound.get(name) is not None:
                raise ValueError(
                    f"GradCacheModel.fit does not support `{name}` yet: the cached gradient is "
                    "that of the unweighted in-batch loss, so weights would be silently "
                    f"ignored. Received: {name} of type {type(bound[name]).__name__}"
                )
        return super().fit(*args, **kwargs)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(
                "GradCacheModel.fit does not support `sample_weight` yet (here from the data: "
                "a dataset yielding (x, y, sample_weight)): the cached gradient is that of "
                "the unweighted in-batch loss, so weights would be silently ignored. "
                f"Received: sample_weight of shape {tuple(sample_weight.shape)}"
            )
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(
                "GradCacheModel.fit takes x = (anchors, positives) (each a tensor or a "
                "dict of tensors); a dataset yields ((anchors, positives),) or "
                "((anchors, positives), labels), since Keras reads a pair (a, b) as (x, y). "
                f"Received: x of type {type(x).__name__}"
            )
        anchors, positives = x
        loss, _, grads, reps = self.grad_cache_gradients(anchors, positives, y)
        self.optimizer.apply(grads, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(_in_batch_accuracy(reps[:, 0], reps[:, 1]))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        reps = self(x, training=False)
        self.loss_tracker.update_state(self._contrastive_loss()(y, reps))
        self.accuracy_tracker.update_state(_in_batch_accuracy(reps[:, 0], reps[:, 1]))
        return {m.name: m.result() for m in self.metrics}

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
