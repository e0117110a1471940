"""GradCacheModel on (anchor, positive, hard negatives...) tuples, with a learned
temperature and sample weights: float64, against one full-batch tape whose loss
is written here in plain keras.ops (sentence-transformers' multiple-negatives
ranking loss, CLIP's logit scale), not with InfoNCE. On TensorFlow and JAX."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_space.losses import InfoNCE
from keras_space.models import GradCacheModel
from keras_space.models.grad_cache_model import _seed_states
from keras_space.optimizers import GradientAccumulator
from tests.backend import runtime_errors, value_and_variable_grads

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

RNG = np.random.default_rng(0)
A = RNG.normal(size=(50, 8))
P = A + 0.3 * RNG.normal(size=(50, 8))
N1 = A + 1.0 * RNG.normal(size=(50, 8))   # hard: closer to the anchor than a random row
N2 = RNG.normal(size=(50, 8))
LABELS = RNG.integers(0, 20, size=50)     # duplicates: masked from each other's negatives
WEIGHTS = RNG.uniform(0.0, 2.0, size=50)


@pytest.fixture(autouse=True)
def _float64():
    # layers in float64, and fit's arrays too (Keras casts float arrays to floatx)
    keras.config.set_dtype_policy("float64")   # the conftest's autouse fixture resets it
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def encoder(dropout=0.2, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        # sigmoid, not tanh: Keras 3.15 computes tanh of float64 in float32 on JAX
        keras.Input((8,)), keras.layers.Dense(16, activation="sigmoid"),
        keras.layers.Dropout(dropout), keras.layers.Dense(4),
    ])


def reference_loss(reps, scale, weights=None, labels=None, symmetric=False):
    """Mean over tuples of w_i · CE(row i of anchors · [all positives, all negatives] · scale)."""
    reps = reps / ops.sqrt(ops.sum(ops.square(reps), axis=-1, keepdims=True))
    b, k = reps.shape[0], reps.shape[1]
    candidates = ops.concatenate([reps[:, j] for j in range(1, k)], axis=0)
    logits = ops.matmul(reps[:, 0], ops.transpose(candidates)) * scale
    own = ops.diagonal(logits[:, :b])
    block = logits[:, :b]
    if labels is not None:
        same = (labels[:, None] == labels[None, :]) & ~np.eye(b, dtype=bool)
        block = ops.where(same, ops.full(block.shape, -np.inf, logits.dtype), block)
        logits = ops.concatenate([block, logits[:, b:]], axis=1)
    rows = ops.logsumexp(logits, axis=1) - own
    if symmetric:
        rows = 0.5 * (rows + ops.logsumexp(block, axis=0) - own)
    weights = np.ones(b) if weights is None else weights
    return ops.sum(weights * rows) / b


def one_tape(model, parts, micro, loss_of_embeddings):
    """(loss, gradients) of `loss_of_embeddings` of the whole batch's (batch, k, dim)
    embeddings in one tape, embedding in pass 1's order (the same dropout masks)."""
    first, second = model._towers()

    def loss():
        chunks = []
        for i in range(0, len(parts[0]), micro):
            embedded = [first(parts[0][i:i + micro], training=True)]
            embedded += [second(part[i:i + micro], training=True) for part in parts[1:]]
            chunks.append(ops.stack(embedded, axis=1))
        return loss_of_embeddings(ops.concatenate(chunks, axis=0))

    return value_and_variable_grads(loss, model.trainable_weights)


def full_batch_gradients(model, parts, micro, scale_fn, **loss_kwargs):
    """One tape over the whole batch with `reference_loss`."""
    return one_tape(model, parts, micro, lambda reps: reference_loss(reps, scale_fn(), **loss_kwargs))


def relative(a, b):
    a = np.concatenate([np.ravel(x) for x in a])
    b = np.concatenate([np.ravel(x) for x in b])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


CASES = {
    # shared tower, 2 hard negatives, uneven micro-batches (50 = 7·7 + 1), dropout replay,
    # a learned temperature, sample weights, duplicate labels, CLIP's symmetric term
    "shared-learned-weighted": dict(towers=1, parts=(A, P, N1, N2), micro=7, learned=True,
                                    weights=WEIGHTS, labels=LABELS, symmetric=True),
    # a query tower and a document tower (dense retrieval), one hard negative
    "two-towers": dict(towers=2, parts=(A, P, N1), micro=16, learned=False,
                       weights=None, labels=None, symmetric=False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_equals_the_full_batch_tape_in_float64(case):
    towers = (encoder(seed=0), encoder(seed=1) if case["towers"] == 2 else None)
    model = GradCacheModel(towers[0], micro_batch_size=case["micro"], positive_encoder=towers[1])
    loss_fn = InfoNCE(0.07, symmetric=case["symmetric"], learnable_temperature=case["learned"],
                      mask_duplicates=case["labels"] is not None)
    model.compile(keras.optimizers.SGD(0.1), loss=loss_fn)
    if case["learned"]:
        model.logit_scale.assign(math.log(1 / 0.05))   # away from the initial value
        assert model.trainable_weights[0] is model.logit_scale
    states = _seed_states(*model._towers())
    start = [s.numpy() for s in states]
    loss, _, grads, reps = model.grad_cache_gradients(case["parts"], case["labels"], case["weights"])
    assert reps.dtype == "float64" and tuple(reps.shape) == (50, len(case["parts"]), 4)
    for s, v in zip(states, start, strict=True):
        s.assign(v)
    scale = (lambda: ops.exp(model.logit_scale.value)) if case["learned"] else (lambda: 1 / 0.07)
    ref_loss, ref_grads = full_batch_gradients(
        model, case["parts"], case["micro"], scale, weights=case["weights"],
        labels=case["labels"], symmetric=case["symmetric"])
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-12)
    assert relative(grads, ref_grads) < 1e-10
    if case["learned"]:   # the temperature's gradient (pass 2's) on its own
        np.testing.assert_allclose(float(grads[0]), float(ref_grads[0]), rtol=1e-10)
        assert abs(float(grads[0])) > 1e-3


def test_fit_honours_sample_weights_exactly():
    parts = (A[:32], P[:32], N1[:32])
    model = GradCacheModel(encoder(dropout=0.0), micro_batch_size=8)
    model.compile(keras.optimizers.SGD(0.5), loss=InfoNCE(0.1))
    before = [w.numpy() for w in model.trainable_weights]
    _, ref = full_batch_gradients(model, parts, 8, lambda: 10.0, weights=WEIGHTS[:32])
    model.fit(parts, sample_weight=WEIGHTS[:32], batch_size=32, epochs=1, shuffle=False, verbose=0)
    expected = [w - 0.5 * g for w, g in zip(before, ref, strict=True)]
    assert relative([w.numpy() for w in model.trainable_weights], expected) < 1e-12
    # all-zero weights: no gradient at all (a dataset yielding (x, y, sample_weight) too)
    after = [w.numpy() for w in model.trainable_weights]
    import tensorflow as tf  # tf.data feeds fit on every backend

    zeros = tf.data.Dataset.from_tensors((parts, np.zeros(32, "int32"), np.zeros(32)))
    model.fit(zeros, verbose=0)
    for a, b in zip(after, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    with pytest.raises(ValueError, match="class_weight"):
        model.fit(parts, class_weight={0: 1.0}, verbose=0)
    for bad, match in ((-WEIGHTS[:32], r"finite weights >= 0"), (np.full(32, np.nan), r"finite weights >= 0")):
        with pytest.raises(runtime_errors(), match=match):
            model.fit(parts, sample_weight=bad, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"one weight per tuple \(8\).*shape \(8, 2\)"):
        model.grad_cache_gradients((A[:8], P[:8]), None, np.ones((8, 2)))


def test_learned_temperature_is_clipped_saved_and_reloaded(tmp_path):
    model = GradCacheModel(encoder(dropout=0.0), micro_batch_size=16)
    # starts at CLIP's ceiling with positives equal to their anchors: the loss wants a
    # larger scale (its gradient is < 0), the update goes above log(100) and the
    # constraint brings it back, as CLIP's clamp does
    model.compile(keras.optimizers.SGD(1.0), loss=InfoNCE(0.01, learnable_temperature=True))
    np.testing.assert_allclose(model.temperature, 0.01, rtol=1e-14)
    grads = model.grad_cache_gradients((A, A), None)[2]
    assert float(grads[0]) < 0
    model.fit((A, A), batch_size=50, epochs=1, verbose=0)
    assert float(model.logit_scale.numpy()) == math.log(100.0)
    model.compile(keras.optimizers.Adam(1e-2), loss=InfoNCE(0.2, learnable_temperature=True))
    assert float(model.logit_scale.numpy()) == math.log(100.0)   # compiling again keeps it
    model.logit_scale.assign(math.log(1 / 0.2))
    model.fit((A, P, N1), batch_size=25, epochs=2, verbose=0)
    learned = model.temperature
    assert learned != pytest.approx(0.2)
    model.save(tmp_path / "clip.keras")
    loaded = keras.saving.load_model(tmp_path / "clip.keras")
    assert loaded.temperature == learned
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(loaded.predict((A, P, N1), verbose=0), model.predict((A, P, N1), verbose=0))
    np.testing.assert_allclose(loaded.evaluate((A, P, N1), batch_size=50, verbose=0)[0],
                               model.evaluate((A, P, N1), batch_size=50, verbose=0)[0], rtol=1e-12)


def test_composes_with_gradient_accumulator_in_float64():
    """Two tuple batches accumulated: one update, the mean of the two batches' gradients."""
    model = GradCacheModel(encoder(dropout=0.0), micro_batch_size=8)
    model.compile(GradientAccumulator(keras.optimizers.SGD(0.5), steps=2),
                  loss=InfoNCE(0.05, learnable_temperature=True))
    before = [w.numpy() for w in model.trainable_weights]
    scale = lambda: ops.exp(model.logit_scale.value)  # noqa: E731
    halves = [(A[i:i + 20], P[i:i + 20], N1[i:i + 20]) for i in (0, 20)]
    refs = [full_batch_gradients(model, half, 8, scale, weights=WEIGHTS[i:i + 20])[1]
            for half, i in zip(halves, (0, 20), strict=True)]
    model.fit((A[:40], P[:40], N1[:40]), sample_weight=WEIGHTS[:40], batch_size=20,
              shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 1
    expected = [w - 0.5 * 0.5 * (g1 + g2)
                for w, g1, g2 in zip(before, *refs, strict=True)]
    assert relative([w.numpy() for w in model.trainable_weights], expected) < 1e-12
