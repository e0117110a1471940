"""Matryoshka against the weighted sum of the wrapped losses' independent references on
the prefixes (InfoNCE's in keras.ops, CoSENT's in Python loops); through GradCacheModel
in micro-batches equal to one full-batch tape (float64, 1e-10: a learned temperature,
labels, weights, dropout; two towers with CoSENT); saved, reloaded and resumed; bad
arguments named. On TensorFlow and JAX."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_space.losses import CoSENT, InfoNCE, Matryoshka
from keras_space.models import GradCacheModel
from keras_space.models.grad_cache_model import _seed_states
from tests.backend import compiled, numpy
from tests.losses.cosent_test import ops_reference
from tests.losses.cosent_test import reference as cosent_reference
from tests.models.grad_cache_tuples_test import (
    LABELS,
    N1,
    WEIGHTS,
    A,
    P,
    encoder,
    one_tape,
    reference_loss,
    relative,
)

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(1)


@pytest.fixture
def float64():
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx("float32")


def test_value_is_the_weighted_sum_over_prefixes_of_the_references():
    reps = RNG.normal(size=(9, 3, 12))
    labels = RNG.integers(0, 4, size=9)
    weights = RNG.uniform(0.0, 2.0, size=9)
    dims, w = (3, 6, 12), (0.5, 0.0, 2.0)   # a weight 0 leaves its width out
    info = InfoNCE(0.07, symmetric=True, mask_duplicates=True)
    got = Matryoshka(info, dims, w)(labels, reps, sample_weight=weights)
    want = sum(wk * float(reference_loss(reps[..., :d], 1 / 0.07, weights, labels, symmetric=True))
               for d, wk in zip(dims, w, strict=True))
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    # a learned temperature: one scale for every width
    learned = Matryoshka(InfoNCE(0.07, learnable_temperature=True), dims)
    got = learned(None, reps, logit_scale=ops.convert_to_tensor(15.0, "float64"))
    want = sum(float(reference_loss(reps[..., :d], 15.0)) for d in dims)
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    assert learned.learnable_temperature and learned.temperature == 0.07
    # CoSENT on pairs with gold scores and pair weights
    scores = RNG.integers(0, 5, size=9).astype("float64")
    got = Matryoshka(CoSENT(), (4, 12), (1.0, 3.0))(scores, reps[:, :2], sample_weight=weights)
    want = math.fsum(wk * cosent_reference(scores, reps[:, :2, :d], weights=weights)
                     for d, wk in ((4, 1.0), (12, 3.0)))
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    # half-precision embeddings: the wrapped loss's float32
    half = Matryoshka(CoSENT(), (4, 12))(scores, reps[:, :2].astype("float16"))
    assert keras.backend.standardize_dtype(half.dtype) == "float32"
    np.testing.assert_allclose(
        float(half), sum(cosent_reference(scores, reps[:, :2, :d].astype("float16").astype("float64"))
                         for d in (4, 12)), rtol=1e-2)


def _grad_cache_against_one_tape(model, parts, micro, y, weights, loss_of_embeddings):
    states = _seed_states(*model._towers())
    start = [numpy(s) for s in states]
    loss, _, grads, _ = model.grad_cache_gradients(parts, y, weights)
    for s, v in zip(states, start, strict=True):
        s.assign(v)
    want, want_grads = one_tape(model, parts, micro, loss_of_embeddings)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-12)
    assert relative(grads, want_grads) < 1e-10
    return grads, want_grads


def test_grad_cache_equals_one_full_batch_tape_in_float64(float64):
    """Tuples with a hard negative through a shared tower with dropout, a learned
    temperature, labels and weights, micro-batches of 7 (50 tuples: uneven); then two
    towers with CoSENT and weights."""
    dims, w = (2, 4), (1.0, 0.5)
    model = GradCacheModel(encoder(dropout=0.2), micro_batch_size=7)
    model.compile(keras.optimizers.SGD(0.1), loss=Matryoshka(
        InfoNCE(0.07, symmetric=True, mask_duplicates=True, learnable_temperature=True), dims, w))
    model.logit_scale.assign(math.log(1 / 0.05))   # away from its initial value

    def infonce_sum(reps):
        scale = ops.exp(model.logit_scale.value)
        return sum(wk * reference_loss(reps[..., :d], scale, WEIGHTS, LABELS, symmetric=True)
                   for d, wk in zip(dims, w, strict=True))

    grads, want = _grad_cache_against_one_tape(model, (A, P, N1), 7, LABELS, WEIGHTS, infonce_sum)
    np.testing.assert_allclose(float(grads[0]), float(want[0]), rtol=1e-10)  # the temperature's
    assert abs(float(grads[0])) > 1e-3

    scores = np.round(RNG.uniform(0, 5, size=50), 1)
    towers = encoder(dropout=0.0, seed=2), encoder(dropout=0.0, seed=3)
    model = GradCacheModel(towers[0], micro_batch_size=16, positive_encoder=towers[1])
    model.compile(keras.optimizers.SGD(0.1), loss=Matryoshka(CoSENT(), dims, w))
    _grad_cache_against_one_tape(
        model, (A, P), 16, scores, WEIGHTS,
        lambda reps: sum(wk * ops_reference(reps[:, 0, :d], reps[:, 1, :d], scores, WEIGHTS)
                         for d, wk in zip(dims, w, strict=True)))


def test_fit_logs_saves_and_resumes(tmp_path):
    """The logs are the wrapped loss's (InfoNCE's in-batch accuracy at the full width);
    a reloaded model continues the run it came from, its learned temperature included."""
    def make():
        # no dropout: Keras saves no SeedGenerator state, so a reloaded model draws other
        # masks than the run it came from (keras-team/keras#19796)
        model = GradCacheModel(encoder(dropout=0.0), micro_batch_size=16)
        model.compile(keras.optimizers.Adam(1e-2),
                      loss=Matryoshka(InfoNCE(0.1, learnable_temperature=True), (2, 4), (2.0, 1.0)))
        return model

    data = (A.astype("float32"), P.astype("float32"))
    model = make()
    history = model.fit(data, batch_size=25, epochs=1, shuffle=False, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.loss, Matryoshka) and loaded.loss.dims == [2, 4]
    assert loaded.loss.weights == [2.0, 1.0] and loaded.loss.loss.learnable_temperature
    assert loaded.temperature == model.temperature != pytest.approx(0.1)
    for m in (model, loaded):
        m.fit(data, batch_size=25, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b))

    scored = GradCacheModel(encoder(dropout=0.0), micro_batch_size=16)
    scored.compile("sgd", loss=Matryoshka(CoSENT(), (2, 4)))
    history = scored.fit(data, np.arange(50.0), batch_size=25, verbose=0)
    assert set(history.history) == {"loss"}
    with pytest.raises(ValueError, match="needs its targets as `y`"):
        scored.fit(data, sample_weight=np.ones(50), batch_size=25, verbose=0)


def test_bad_arguments_are_named():
    for loss in ("mse", None, Matryoshka(InfoNCE(), (2,)), lambda y, p: 0.0):
        with pytest.raises(ValueError, match="`loss` must be a keras.losses.Loss"):
            Matryoshka(loss, (2,))
    for dims, match in (((), "at least 1"), ((0, 4), ">= 1"), ((4, 2), "increasing"),
                        ((2, 2), "increasing"), ((2.5,), "sequence of ints"), ("ab", "ints")):
        with pytest.raises(ValueError, match=f"`dims` must be .*{match}"):
            Matryoshka(InfoNCE(), dims)
    for weights in ((1.0,), (1.0, -1.0), (1.0, float("nan")), (0.0, 0.0), "ab", 1.0,
                    (1.0, float("inf"))):
        with pytest.raises(ValueError, match="weights"):
            Matryoshka(InfoNCE(), (2, 4), weights)
    reps = RNG.normal(size=(4, 2, 3))
    for call in (lambda y: Matryoshka(InfoNCE(), (2, 4))(None, y),
                 compiled(lambda y: Matryoshka(InfoNCE(), (2, 4))(None, y))):
        with pytest.raises(ValueError, match=r"`dims` must be at most the embeddings' width.*"
                                             r"\(4, 2, 3\).*dims=\[2, 4\]"):
            call(reps)
    # the wrapped loss's own refusals reach the user unchanged
    with pytest.raises(ValueError, match="y_true"):
        Matryoshka(CoSENT(), (2, 3))(np.array([1.0, np.nan, 2.0, 3.0]), reps)
    config = Matryoshka(CoSENT(scale=5.0), (2, 3), (1.0, 0.0)).get_config()
    again = Matryoshka.from_config(config)
    assert again.loss.scale == 5.0 and again.dims == [2, 3] and again.weights == [1.0, 0.0]


@pytest.mark.tensorflow_only("a width known only at run time: a tf.function's input_signature")
def test_a_width_known_only_at_run_time_is_checked_when_it_runs():
    import tensorflow as tf

    graph = tf.function(lambda y: Matryoshka(CoSENT(), (2, 4))(tf.range(4.0), y),
                        input_signature=[tf.TensorSpec((4, 2, None))])
    with pytest.raises(tf.errors.InvalidArgumentError, match="`dims` must hold at most the embeddings"):
        graph(RNG.normal(size=(4, 2, 3)).astype("float32"))
    assert np.isfinite(float(graph(RNG.normal(size=(4, 2, 5)).astype("float32"))))
