"""GradientAccumulator against the plain large-batch run."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_space.optimizers import GradientAccumulator
from tests.backend import value_and_variable_grads

# also run by the JAX session; on TensorFlow the optimizers build inside the first
# traced step, as users run them (conftest.py)
pytestmark = [pytest.mark.all_backends, pytest.mark.optimizer_built_in_trace]

RNG = np.random.default_rng(0)
X = RNG.normal(size=(96, 8)).astype("float32")
Y = RNG.normal(size=(96, 1)).astype("float32")
IDS = RNG.integers(0, 50, size=(96, 5))


def mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)]
    )


def embedding_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(50, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )


def schedule():
    return keras.optimizers.schedules.PolynomialDecay(1e-2, decay_steps=5, end_learning_rate=1e-4)


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw_schedule": lambda: keras.optimizers.AdamW(schedule(), weight_decay=0.1),
    "adam_clipnorm_ema": lambda: keras.optimizers.Adam(1e-2, clipnorm=0.1, use_ema=True),
}


def fit(model, optimizer, x, batch_size, epochs=2):
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, Y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


def assert_same_weights(a, b, rtol=1e-6):
    """||w_a - w_b|| / ||w_a|| over all weights (float32 summation order differs)."""
    wa = np.concatenate([w.ravel() for w in a.get_weights()]).astype("float64")
    wb = np.concatenate([w.ravel() for w in b.get_weights()]).astype("float64")
    rel = np.linalg.norm(wa - wb) / np.linalg.norm(wa)
    assert rel <= rtol, rel


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_micro_batches_equal_the_large_batch(name):
    big = fit(mlp(), OPTIMIZERS[name](), X, batch_size=32)
    acc = GradientAccumulator(OPTIMIZERS[name](), steps=4)
    small = fit(mlp(), acc, X, batch_size=8)
    assert_same_weights(big, small)
    assert int(acc.iterations.numpy()) == int(big.optimizer.iterations.numpy()) == 6
    # the schedule advanced once per real update
    np.testing.assert_allclose(float(acc.inner_optimizer.learning_rate), float(big.optimizer.learning_rate))


def large_batch_true_gradient(model, optimizer, x, batch_size, epochs=2):
    """The large-batch run with each step's true gradient (IndexedSlices densified)."""
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            grads = batch_gradients(model, x[start : start + batch_size], Y[start : start + batch_size])
            optimizer.apply(grads, model.trainable_variables)
    return model


def batch_gradients(model, x, y):
    """The dense gradients of the batch's mean squared error in the model's weights."""
    def loss():
        return ops.sum(ops.square(model(x) - y)) / float(np.size(y))

    return value_and_variable_grads(loss, model.trainable_variables)[1]


def test_sparse_embedding_gradients():
    big = fit(embedding_model(), keras.optimizers.SGD(0.5), IDS, batch_size=32)
    acc = GradientAccumulator(keras.optimizers.SGD(0.5), steps=4)
    small = fit(embedding_model(), acc, IDS, batch_size=8)
    assert_same_weights(big, small)
    # Adam: Keras squares IndexedSlices values before summing duplicate rows, so
    # its own sparse large-batch step is not Adam on the true gradient; we
    # accumulate with scatter_add (duplicates summed) and match the true one.
    big = large_batch_true_gradient(embedding_model(), keras.optimizers.Adam(1e-2), IDS, 32)
    small = fit(embedding_model(), GradientAccumulator(keras.optimizers.Adam(1e-2), 4), IDS, batch_size=8)
    assert_same_weights(big, small)


@pytest.mark.tensorflow_only("tf.IndexedSlices are TensorFlow's sparse gradients")
def test_indexed_slices_stay_sparse_until_the_update():
    import tensorflow as tf

    model = embedding_model()
    opt = GradientAccumulator(keras.optimizers.SGD(0.1), steps=3)
    opt.build(model.trainable_variables)
    table = model.layers[0].embeddings
    seen = []
    inner_apply = opt.inner_optimizer.apply

    def spy(grads, variables=None):
        seen.extend(type(g).__name__ for g, v in zip(grads, variables, strict=True) if v is table)
        return inner_apply(grads, variables)

    opt.inner_optimizer.apply = spy
    rows = tf.constant([3, 7])
    g = tf.IndexedSlices(tf.ones((2, 4)), rows, tf.constant([50, 4]))
    grads = [g if v is table else tf.zeros_like(v) for v in model.trainable_variables]
    for _ in range(3):
        opt.apply(grads, model.trainable_variables)
    assert seen == ["IndexedSlices"]
    touched = np.flatnonzero(np.abs(np.asarray(opt.accumulators[0])).sum(1))
    assert touched.size == 0  # cleared after the update


def test_custom_training_loop():
    model = mlp()
    opt = GradientAccumulator(keras.optimizers.Adam(1e-2), steps=4)
    for start in range(0, 96, 8):
        opt.apply(batch_gradients(model, X[start : start + 8], Y[start : start + 8]),
                  model.trainable_variables)
    big = fit(mlp(), keras.optimizers.Adam(1e-2), X, batch_size=32, epochs=1)
    assert_same_weights(big, model)


def test_save_mid_window_and_continue(tmp_path):
    reference = fit(mlp(), GradientAccumulator(keras.optimizers.Adam(1e-2), 4), X, batch_size=8, epochs=2)
    # run 1 epoch + 2 micro-steps (mid-window), save, reload, finish
    model = mlp()
    opt = GradientAccumulator(keras.optimizers.Adam(1e-2), 4)
    model.compile(optimizer=opt, loss="mse")
    model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.fit(X[:16], Y[:16], batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert int(opt.micro_step.numpy()) == 2
    model.save(tmp_path / "mid.keras")
    loaded = keras.saving.load_model(tmp_path / "mid.keras")
    assert isinstance(loaded.optimizer, GradientAccumulator)
    assert int(loaded.optimizer.micro_step.numpy()) == 2
    np.testing.assert_allclose(loaded.optimizer.accumulators[0], opt.accumulators[0])
    loaded.fit(X[16:], Y[16:], batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_weights(reference, loaded)


@pytest.mark.tensorflow_only("tf.train.Checkpoint is TensorFlow's checkpoint format")
def test_checkpoint_mid_window_and_continue(tmp_path):
    import tensorflow as tf

    reference = fit(mlp(), GradientAccumulator(keras.optimizers.Adam(1e-2), 4), X, batch_size=8, epochs=2)
    model2 = mlp()
    opt2 = GradientAccumulator(keras.optimizers.Adam(1e-2), 4)
    model2.compile(optimizer=opt2, loss="mse")
    model2.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model2.fit(X[:16], Y[:16], batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tf.train.Checkpoint(model=model2, optimizer=opt2).save(str(tmp_path / "ckpt"))
    model3 = mlp()
    opt3 = GradientAccumulator(keras.optimizers.Adam(1e-2), 4)
    model3.compile(optimizer=opt3, loss="mse")
    opt3.build(model3.trainable_variables)
    tf.train.Checkpoint(model=model3, optimizer=opt3).restore(path).assert_consumed()
    assert int(opt3.micro_step.numpy()) == 2
    model3.fit(X[16:], Y[16:], batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_weights(reference, model3)


def test_composes_with_loss_scale_optimizer_and_skips_a_non_finite_window():
    inner = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=128.0)
    opt = GradientAccumulator(inner, steps=2)
    big = fit(mlp(), keras.optimizers.SGD(0.1), X, batch_size=16, epochs=1)
    small = fit(mlp(), opt, X, batch_size=8, epochs=1)
    assert_same_weights(big, small, rtol=1e-5)
    # a NaN micro-step poisons its window: the update is skipped, the scale halves
    model = mlp()
    opt = GradientAccumulator(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=128.0), steps=2
    )
    opt.build(model.trainable_variables)
    before = [np.array(v) for v in model.trainable_variables]
    good = [ops.ones(v.shape, v.dtype) for v in model.trainable_variables]
    bad = [ops.full(v.shape, np.nan) for v in model.trainable_variables]
    opt.apply(good, model.trainable_variables)
    opt.apply(bad, model.trainable_variables)
    for b, v in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v)
    assert float(opt.inner_optimizer.dynamic_scale.numpy()) == 64.0
    assert int(opt.micro_step.numpy()) == 0 and np.all(np.asarray(opt.accumulators[0]) == 0)
    opt.apply(good, model.trainable_variables)
    opt.apply(good, model.trainable_variables)
    assert not np.array_equal(before[0], model.trainable_variables[0])


def test_mixed_float16_accumulates_in_float32_and_trains():
    keras.config.set_dtype_policy("mixed_float16")
    model = mlp()
    opt = GradientAccumulator(keras.optimizers.Adam(1e-2), steps=4)
    model.compile(optimizer=opt, loss="mse")
    history = model.fit(X, Y, batch_size=8, epochs=3, verbose=0)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert all(a.dtype == "float32" for a in opt.accumulators)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps=0"):
        GradientAccumulator(keras.optimizers.SGD(), steps=0)
    with pytest.raises(ValueError, match="steps=2.5"):
        GradientAccumulator(keras.optimizers.SGD(), steps=2.5)
    with pytest.raises(ValueError, match="inner_optimizer='adam'"):
        GradientAccumulator("adam", steps=2)
    with pytest.raises(ValueError, match="already accumulates"):
        GradientAccumulator(keras.optimizers.SGD(gradient_accumulation_steps=2), steps=2)
    with pytest.raises(ValueError, match="clipnorm"):
        GradientAccumulator(keras.optimizers.SGD(), steps=2, clipnorm=1.0)


def test_config_round_trip():
    opt = GradientAccumulator(keras.optimizers.AdamW(schedule(), weight_decay=0.1), steps=3, name="acc")
    revived = GradientAccumulator.from_config(opt.get_config())
    assert revived.steps == 3 and isinstance(revived.inner_optimizer, keras.optimizers.AdamW)
    assert revived.get_config() == opt.get_config()
