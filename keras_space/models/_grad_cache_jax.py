"""GradCacheModel's two passes on JAX (internal).

Everything is a function of the state values (Keras's JAX trainer hands
`train_step` the trainable, non-trainable, optimizer and metric values and
takes new ones back); a `StatelessScope` maps the model's variables to them
while the Keras layers run:

- pass 1 embeds each micro-batch without gradients, keeping the non-trainable
  values (the dropout seed states) it started from;
- pass 2 (in `grad_cache_model`) is the full-batch loss on the embeddings:
  its `jax.value_and_grad` gives d loss / d embeddings (and the learned
  temperature's gradient);
- pass 3 re-embeds each micro-batch from the seed states pass 1 started it
  with (the same dropout masks) and pulls the cached embedding gradients back
  through it with `jax.vjp` of that stateless embedding, summing.

The whole micro-batches run in a `jax.lax.scan` (the seed states carried), and
a last, smaller one after it: the traced step holds the encoder once per pass
(twice with an uneven last micro-batch), whatever the number of micro-batches.
"""

import jax
import keras


def _scope(model, trainable, non_trainable, optimizer=None, metrics=None):
    mapping = list(zip(model.trainable_variables, trainable, strict=True))
    mapping += zip(model.non_trainable_variables, non_trainable, strict=True)
    if optimizer is not None:
        mapping += zip(model.optimizer.variables, optimizer, strict=True)
    if metrics is not None:
        mapping += zip(model.metrics_variables, metrics, strict=True)
    return keras.StatelessScope(state_mapping=mapping)


def _embed(model, trainable, non_trainable, chunk, training):
    """(embeddings, non-trainable values after) of one micro-batch, statelessly."""
    with _scope(model, trainable, non_trainable) as scope:
        embeddings = model._embed(chunk, training)
    return embeddings, [scope.get_current_value(v) for v in model.non_trainable_variables]


def _stacked(t, count, m):
    """The first `count` micro-batches of `t` (rows of `m`) on a new leading axis."""
    return jax.numpy.reshape(t[:count * m], (count, m) + tuple(t.shape[1:]))


def gradients(model, state, parts, batch, y, sample_weight):
    """(loss, scaled loss, gradients, embeddings, non-trainable values after pass 1).

    `state` = (trainable, non-trainable, optimizer) values. The loss (the model's
    `_scaled_loss`) runs in a scope that maps every variable, the learned temperature
    (a trainable variable of the model) to the traced value.
    """
    trainable, non_trainable, optimizer = state
    m = model.micro_batch_size
    count, whole = batch // m, batch // m * m  # whole micro-batches, and their rows
    stacked = keras.tree.map_structure(lambda t: _stacked(t, count, m), parts) if count else None
    rest = keras.tree.map_structure(lambda t: t[whole:], parts) if whole < batch else None
    frozen = jax.lax.stop_gradient(list(trainable))

    # Pass 1: embeddings without gradients; each micro-batch's starting seed states kept.
    def embed_one(current, chunk):
        h, after = _embed(model, frozen, current, chunk, True)
        return after, (jax.lax.stop_gradient(h), current)

    current, embedded, starts = list(non_trainable), [], None
    if stacked is not None:
        current, (h, starts) = jax.lax.scan(embed_one, current, stacked)
        embedded.append(jax.numpy.reshape(h, (-1,) + h.shape[2:]))
    if rest is not None:
        rest_start = current
        current, (h, _) = embed_one(current, rest)
        embedded.append(h)
    reps = keras.ops.concatenate(embedded, axis=0) if len(embedded) > 1 else embedded[0]

    # Pass 2: the full-batch loss on the embeddings (and the trainable values: the
    # temperature is one; the encoders' weights do not enter it).
    def loss_fn(reps, trainable):
        with _scope(model, trainable, current, optimizer):
            loss, scaled = model._scaled_loss(reps, y, sample_weight)
        return scaled, loss

    (scaled, loss), (cache, direct) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        reps, list(trainable))

    # Pass 3: each micro-batch again from its seed states, the cached gradients pulled back.
    def pull_back(grads, chunk_start_cache):
        chunk, start, chunk_cache = chunk_start_cache
        _, pull = jax.vjp(lambda t: _embed(model, t, start, chunk, True)[0], list(trainable))
        (chunk_grads,) = pull(chunk_cache)
        return [g + c.astype(g.dtype) for g, c in zip(grads, chunk_grads, strict=True)], None

    grads = list(direct)
    if stacked is not None:
        grads, _ = jax.lax.scan(pull_back, grads, (stacked, starts, _stacked(cache, count, m)))
    if rest is not None:
        grads, _ = pull_back(grads, (rest, rest_start, cache[whole:]))
    return loss, scaled, grads, reps, current


def train_step(model, state, data):
    """Keras's JAX `train_step(state, data)` for a GradCacheModel."""
    trainable, non_trainable, optimizer, metrics = state
    parts, batch, y, sample_weight = model._prepared_data(data)
    loss, _, grads, reps, non_trainable = gradients(
        model, (trainable, non_trainable, optimizer), parts, batch, y, sample_weight)
    trainable, optimizer = model.optimizer.stateless_apply(optimizer, grads, trainable)
    with _scope(model, trainable, non_trainable, optimizer, metrics) as scope:
        logs = model._finish_metrics(loss, reps)
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, optimizer, metrics)


def test_step(model, state, data):
    """Keras's JAX `test_step(state, data)`: the embeddings in inference mode."""
    trainable, non_trainable, metrics = state
    parts, _, y, sample_weight = model._prepared_data(data)
    reps, _ = _embed(model, trainable, non_trainable, parts, False)
    with _scope(model, trainable, non_trainable, metrics=metrics) as scope:
        loss = model.compute_loss(y=y, y_pred=reps, sample_weight=sample_weight)
        logs = model._finish_metrics(loss, reps)
    metrics = [scope.get_current_value(v) for v in model.metrics_variables]
    return logs, (trainable, non_trainable, metrics)
