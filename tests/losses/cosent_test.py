"""CoSENT against a float64 reference written with Python loops over the ordered pairs,
its gradient against finite differences of that reference, bad inputs named; through
GradCacheModel in micro-batches equal to one full-batch tape (float64, the loss written
here in plain keras.ops), with sample weights. On TensorFlow and JAX."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_space.losses import CoSENT
from keras_space.models import GradCacheModel
from tests.backend import (
    compiled,
    grad,
    numpy,
    runtime_errors,
    value_and_variable_grads,
)

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)


def reference(scores, pairs, scale=20.0, weights=None):
    """log(1 + sum_{s_i > s_j} w_i w_j exp(scale (c_j - c_i))), loops and math.fsum."""
    u, v = pairs[:, 0], pairs[:, 1]
    cos = [float(a @ b / max(np.linalg.norm(a), 1e-12) / max(np.linalg.norm(b), 1e-12))
           for a, b in zip(u, v, strict=True)]
    w = np.ones(len(scores)) if weights is None else weights
    terms = [w[i] * w[j] * math.exp(scale * (cos[j] - cos[i]))
             for i in range(len(scores)) for j in range(len(scores)) if scores[i] > scores[j]]
    return math.log1p(math.fsum(terms))


def ops_reference(u, v, scores, weights, scale=20.0):
    """The same loss in plain keras.ops (differentiable), without logsumexp's shift."""
    cos = ops.sum(u * v, -1) / ops.sqrt(ops.sum(u * u, -1) * ops.sum(v * v, -1))
    higher = scores[:, None] > scores[None, :]
    terms = ops.exp(scale * (cos[None, :] - cos[:, None])) * (weights[:, None] * weights[None, :])
    return ops.log(1.0 + ops.sum(ops.where(higher, terms, 0.0)))


@pytest.mark.parametrize("batch", [1, 2, 7, 33])
def test_value_and_gradient_against_the_reference(batch):
    pairs = RNG.normal(size=(batch, 2, 5))
    scores = RNG.integers(0, 4, size=batch).astype("float64")  # ties: no term between them
    weights = RNG.uniform(0.0, 2.0, size=batch)
    weights[::3] = 0.0
    for w in (None, weights):
        got = float(CoSENT()(scores, pairs, sample_weight=w))
        np.testing.assert_allclose(got, reference(scores, pairs, weights=w), rtol=1e-12, atol=1e-15)
        (g,) = grad(lambda p, w=w: CoSENT()(scores, p, sample_weight=w), ops.convert_to_tensor(pairs))
        h = 1e-6
        fd = np.full(pairs.shape, np.nan)
        entries = list(np.ndindex(pairs.shape))  # 24 of them (all for small batches)
        for k in RNG.permutation(len(entries))[:24]:
            idx = entries[k]
            step = np.zeros_like(pairs)
            step[idx] = h
            fd[idx] = (reference(scores, pairs + step, weights=w)
                       - reference(scores, pairs - step, weights=w)) / (2 * h)
        # central differences of a smooth function: h^2 truncation, rounding 1e-16 / h
        checked = ~np.isnan(fd)
        np.testing.assert_allclose(g[checked], fd[checked], rtol=1e-6, atol=1e-8)
    # float32 embeddings: the float32 loss, to float32 accuracy (scale x cosine rounding)
    got32 = float(CoSENT()(scores.astype("float32"), pairs.astype("float32")))
    np.testing.assert_allclose(got32, reference(scores, pairs.astype("float32").astype("float64")),
                               rtol=1e-5, atol=20 * 4e-7)


def test_no_ordering_to_learn_gives_zero_and_any_monotone_score_scale_the_same():
    pairs = RNG.normal(size=(6, 2, 3))
    for scores in (np.full(6, 2.5), np.array([1.0])):
        p = pairs[: len(scores)]
        assert float(CoSENT()(scores, p)) == 0.0
        (g,) = grad(lambda q, s=scores: CoSENT()(s, q), ops.convert_to_tensor(p))
        np.testing.assert_array_equal(g, 0.0)
    assert float(CoSENT()(np.zeros(0), np.zeros((0, 2, 3)))) == 0.0  # an empty batch
    scores = RNG.uniform(0, 5, size=6)
    np.testing.assert_allclose(float(CoSENT()(scores, pairs)),
                               float(CoSENT()(np.exp(scores) * 3 - 7, pairs)), rtol=1e-14)
    # mixed precision: float16 embeddings give the float32 loss
    half = CoSENT()(scores, pairs.astype("float16"))
    assert keras.backend.standardize_dtype(half.dtype) == "float32"


def test_bad_inputs_are_named():
    pairs = RNG.normal(size=(4, 2, 3))
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    for scale in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            CoSENT(scale=scale)
    for bad in (np.array([1.0, np.nan, 3.0, 4.0]), np.array([np.inf, 2.0, 3.0, 4.0])):
        with pytest.raises(ValueError, match="y_true"):
            CoSENT()(bad, pairs)
    with pytest.raises(ValueError, match=r"one gold score per pair.*\(3,\)"):
        CoSENT()(scores[:3], pairs)
    with pytest.raises(ValueError, match="needs the gold scores"):
        CoSENT()(None, pairs)
    with pytest.raises(ValueError, match=r"\(batch, 2, dim\).*\(4, 3, 3\)"):
        CoSENT()(scores, RNG.normal(size=(4, 3, 3)))
    for weights in (np.array([1.0, -1.0, 1.0, 1.0]), np.array([1.0, np.nan, 1.0, 1.0])):
        with pytest.raises(ValueError, match="sample_weight"):
            CoSENT()(scores, pairs, sample_weight=weights)
    step = compiled(lambda s, p: CoSENT()(s, p))
    with pytest.raises(runtime_errors(), match="y_true"):
        numpy(step(np.array([1.0, np.nan, 3.0, 4.0]), pairs))
    config = CoSENT(scale=5.0).get_config()
    assert CoSENT.from_config(config).scale == 5.0


@pytest.fixture
def float64():
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def test_grad_cache_equals_one_full_batch_tape_in_float64(float64):
    """Pairs with gold scores and weights, micro-batches of 7 (50 pairs: uneven), two
    towers: the loss and every weight's gradient equal one tape over the whole batch
    with CoSENT written here in keras.ops (1e-10)."""
    keras.utils.set_random_seed(0)
    towers = [keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="sigmoid"),
                                keras.layers.Dense(4)]) for _ in range(2)]
    a = RNG.normal(size=(50, 8))
    b = a + 0.5 * RNG.normal(size=(50, 8))
    scores = np.round(RNG.uniform(0, 5, size=50), 1)
    weights = RNG.uniform(0.0, 2.0, size=50)
    model = GradCacheModel(towers[0], micro_batch_size=7, positive_encoder=towers[1])
    model.compile(keras.optimizers.SGD(0.1), loss=CoSENT())
    model((a[:2], b[:2]))
    loss, _, grads, _ = model.grad_cache_gradients((a, b), scores, weights)

    def full_batch():
        return ops_reference(towers[0](a, training=True), towers[1](b, training=True), scores,
                             weights)

    want, want_grads = value_and_variable_grads(full_batch, model.trainable_weights)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-10)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(numpy(g), numpy(w), rtol=1e-10, atol=1e-14)
    history = model.fit((a, b), scores, sample_weight=weights, batch_size=25, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(history.history) == {"loss"}  # no in-batch retrieval accuracy for scored pairs
    with pytest.raises(ValueError, match="CoSENT needs its targets as `y`"):
        model.fit((a, b), sample_weight=weights, batch_size=25, verbose=0)  # not zeros silently
    with pytest.raises(ValueError, match="needs the gold scores"):
        model.fit((a, b), batch_size=25, verbose=0)
