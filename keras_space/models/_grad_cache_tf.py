"""GradCacheModel's passes on TensorFlow (internal).

The passes run in `tf.while_loop`s with `tf.TensorArray`s, one micro-batch at a time
(`parallel_iterations=1`: by default the loop overlaps up to 10 independent iterations,
which held every micro-batch's activations at once, more memory than the full-batch
step on the pretrained MiniLM); gradients come from
`tf.GradientTape` (pass 3 with `output_gradients`); the dropout seed states are
snapshotted before each micro-batch in pass 1 and restored before it in pass 3;
under `tf.distribute` the embeddings are all-gathered with the replica
context's collectives, so the negatives are global.
"""

import keras
import tensorflow as tf

from keras_space.models.grad_cache_model import _seed_states


def _gather_across_replicas(local, *extras):
    """(all replicas' rows concatenated, this replica's row offset, extras gathered too).

    `extras` (labels, sample weights; None stays None) are gathered the same way, so
    the loss sees the whole global batch with its labels and weights.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return local, 0, extras

    # A collective sends to the devices its input is on. With one device per worker
    # (MultiWorkerMirroredStrategy on CPUs) a traced tensor names none ("destinations
    # can not be empty"): it is placed on the worker's device first.
    devices = ctx.strategy.extended.worker_devices
    place = devices[0] if len(devices) == 1 else None

    def gather(t):
        if place is not None:
            with tf.device(place):
                t = tf.identity(t)
        return ctx.all_gather(t, axis=0)

    sizes = gather(tf.shape(local)[:1])
    replica = ctx.replica_id_in_sync_group
    offset = tf.reduce_sum(sizes[:replica])
    extras = tuple(None if e is None else gather(e) for e in extras)
    return gather(local), offset, extras



def _encode_chunk(model, parts, i):
    m = model.micro_batch_size
    chunk = keras.tree.map_structure(lambda t: t[i * m : (i + 1) * m], parts)
    return model._embed(chunk, True)


def gradients(model, parts, batch, y, sample_weight):
    """(loss, scaled loss, gradients, embeddings): see `GradCacheModel.grad_cache_gradients`."""
    m = model.micro_batch_size
    n = (batch + m - 1) // m
    states = _seed_states(*model._towers())
    weights = model.trainable_weights

    # Pass 1: embeddings without a tape; snapshot RNG states per chunk.
    snapshots = [tf.TensorArray(s.dtype, size=n) for s in states]
    embeds = tf.TensorArray(model._embedding_dtype(), size=n, infer_shape=False,
                            element_shape=tf.TensorShape([None, len(parts), None]))

    def pass1(i, snaps, embeds):
        snaps = [ta.write(i, s.value) for ta, s in zip(snaps, states, strict=True)]
        return i + 1, snaps, embeds.write(i, _encode_chunk(model, parts, i))

    _, snapshots, embeds = tf.while_loop(lambda i, *_: i < n, pass1,
                                         (tf.constant(0), snapshots, embeds), parallel_iterations=1)
    after = [s.value for s in states]
    local_reps = embeds.concat()

    # Pass 2: the full-batch loss on the embeddings only. Under tf.distribute the
    # embeddings (labels, weights) of all replicas are gathered first; each replica
    # then keeps the slice of d loss / d embeddings that belongs to its own samples
    # (no gradient flows through the collective), and the optimizer's one
    # all-reduce sums the replicas' parameter gradients.
    reps, offset, (y, sample_weight) = _gather_across_replicas(local_reps, y, sample_weight)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    scale_weights = [model.logit_scale] if model.logit_scale is not None else []
    with tf.GradientTape() as tape:
        tape.watch(reps)
        loss, scaled = model._scaled_loss(reps, y, sample_weight, replicas)
    cache, *scale_grads = tape.gradient(scaled, [reps, *scale_weights])
    cache = cache[offset : offset + batch]

    # Pass 3: re-embed each chunk under a tape with the same RNG states and
    # back-propagate the cached embedding gradients.
    zeros = [tf.zeros(w.shape, w.dtype) for w in weights]

    def pass3(i, grads):
        for s, ta in zip(states, snapshots, strict=True):
            s.assign(ta.read(i))
        with tf.GradientTape() as chunk_tape:
            h = _encode_chunk(model, parts, i)
        parts_grads = chunk_tape.gradient(h, weights, output_gradients=cache[i * m : (i + 1) * m])
        grads = [
            acc if part is None else acc + tf.cast(tf.convert_to_tensor(part), acc.dtype)
            for acc, part in zip(grads, parts_grads, strict=True)
        ]
        return i + 1, grads

    _, grads = tf.while_loop(lambda i, *_: i < n, pass3, (tf.constant(0), zeros),
                             parallel_iterations=1)
    for s, value in zip(states, after, strict=True):
        s.assign(value)
    # The temperature's gradient is pass 2's: every replica computed the whole of
    # it, and the optimizer's all-reduce sums the replicas.
    for w, g in zip(scale_weights, scale_grads, strict=True):
        index = next(j for j, v in enumerate(weights) if v is w)
        grads[index] = grads[index] + tf.cast(g, grads[index].dtype) / float(replicas)
    return loss, scaled, grads, reps
