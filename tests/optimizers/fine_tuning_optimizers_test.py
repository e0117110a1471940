"""Schedules and layer-wise learning rates (issue 17), against numpy and against
separate optimizers per group."""

import os

import keras
import numpy as np
import pytest

from keras_space.optimizers import (
    GradientAccumulator,
    LayerwiseLearningRate,
    layerwise_decay,
)
from keras_space.optimizers.schedules import PiecewiseLinear, warmup_linear_decay
from tests.backend import value_and_variable_grads

# also run by the JAX session; on TensorFlow the optimizers build inside the first
# traced step, as users run them (conftest.py)
pytestmark = [pytest.mark.all_backends, pytest.mark.optimizer_built_in_trace]


def _numpy_piecewise(step, points):
    """bert4keras's piecewise_linear: (0, 0) unless given, linear between, flat after."""
    points = dict(points)
    points.setdefault(0, 0.0)
    xs = sorted(points)
    return np.interp(step, xs, [points[x] for x in xs])  # np.interp is flat after the last


@pytest.mark.parametrize("points", [{1000: 1.0, 2000: 0.1}, {0: 1.0, 10: 0.5, 30: 2.0}, {5: 3.0}])
def test_piecewise_linear_matches_numpy_and_reloads(points, tmp_path):
    schedule = PiecewiseLinear(2e-3, points)
    steps = np.array([0, 1, 3, 5, 7, 10, 20, 29, 30, 31, 500, 999, 1000, 1500, 2000, 10**6])
    got = np.array([float(schedule(s)) for s in steps])
    np.testing.assert_allclose(got, 2e-3 * _numpy_piecewise(steps, points), rtol=1e-6, atol=1e-12)
    # registered: a compiled model reloads it without custom_objects
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.AdamW(schedule), "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    model.save(tmp_path / "m.keras")
    revived = keras.saving.load_model(tmp_path / "m.keras").optimizer._learning_rate
    assert isinstance(revived, PiecewiseLinear) and revived.points == schedule.points
    assert float(revived(1500)) == float(schedule(1500))


def test_warmup_linear_decay_is_the_bert_recipe():
    schedule = warmup_linear_decay(1e-4, warmup_steps=10, total_steps=110, end_multiplier=0.1)
    steps = np.arange(0, 200, 7)
    want = 1e-4 * np.interp(steps, [0, 10, 110], [0.0, 1.0, 0.1])
    np.testing.assert_allclose([float(schedule(s)) for s in steps], want, rtol=1e-6, atol=1e-12)
    assert float(warmup_linear_decay(1.0, 0, 10)(0)) == 1.0  # no warm-up: start at the peak


@pytest.mark.parametrize("bad, match", [
    (dict(points={}), "non-empty dict"),
    (dict(points=[(1, 1.0)]), "non-empty dict"),
    (dict(points={-1: 1.0}), "points"),
    (dict(points={1: np.nan}), "points"),
    (dict(points={1: -0.5}), "points"),
    (dict(points={1.5: 1.0}), "points"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=np.inf), "learning_rate"),
])
def test_piecewise_linear_refuses_bad_arguments(bad, match):
    kwargs = dict(learning_rate=1e-3, points={10: 1.0}) | bad
    with pytest.raises(ValueError, match=match):
        PiecewiseLinear(**kwargs)


def test_warmup_linear_decay_refuses_bad_arguments():
    with pytest.raises(ValueError, match="total_steps` must be greater"):
        warmup_linear_decay(1e-3, 10, 10)
    for kwargs in (dict(warmup_steps=-1), dict(total_steps=0), dict(end_multiplier=np.inf)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            warmup_linear_decay(**(dict(learning_rate=1e-3, warmup_steps=1, total_steps=10) | kwargs))


def test_schedule_counts_real_updates_under_accumulation():
    schedule = PiecewiseLinear(1.0, {4: 1.0})
    optimizer = GradientAccumulator(keras.optimizers.SGD(schedule), steps=3)
    v = keras.Variable(np.zeros(2, "float32"))
    for _ in range(6):  # 6 micro-steps = 2 real updates
        optimizer.apply([np.ones(2, "float32")], [v])
    assert int(optimizer.iterations) == 2
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.5)
    # SGD on the mean gradient 1 with rates schedule(0) = 0 and schedule(1) = 0.25
    np.testing.assert_allclose(v.numpy(), [-0.25, -0.25], rtol=1e-6)


# --------------------------------------------------------------- layer-wise rates

GROUPS = {"low/.*": 0.25, "mid/.*": 0.5}  # "top" keeps the default 1


def _model():
    # sigmoid, not tanh: Keras 3.15 computes tanh of float64 in float32 on JAX
    keras.utils.set_random_seed(3)
    x = keras.Input((4,), dtype="float64")
    h = keras.layers.Dense(5, activation="sigmoid", name="low", dtype="float64")(x)
    h = keras.layers.Dense(5, activation="sigmoid", name="mid", dtype="float64")(h)
    y = keras.layers.Dense(1, name="top", dtype="float64")(h)
    return keras.Model(x, y)


def _grads(model, x, y):
    def loss():
        return keras.ops.sum(keras.ops.square(model(x) - y)) / float(np.size(y))

    return value_and_variable_grads(loss, model.trainable_variables)[1]


OPTIMIZERS = {
    "sgd_momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9),
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw_decay_schedule": lambda lr: keras.optimizers.AdamW(
        PiecewiseLinear(lr, {2: 1.0, 6: 0.2}), weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_layerwise_rates_equal_separate_optimizers_per_group(name):
    make = OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 1))
    ours, reference = _model(), _model()
    optimizer = LayerwiseLearningRate(make(0.05), GROUPS)
    factors = {"low": 0.25, "mid": 0.5, "top": 1.0}
    separate = {}
    for layer_name, factor in factors.items():
        lr = 0.05 * factor
        if name == "adamw_decay_schedule":
            separate[layer_name] = keras.optimizers.AdamW(
                PiecewiseLinear(lr, {2: 1.0, 6: 0.2}), weight_decay=0.1)
        else:
            separate[layer_name] = make(lr)
    for _ in range(7):
        optimizer.apply(_grads(ours, x, y), ours.trainable_variables)
        grads = _grads(reference, x, y)
        for layer_name, opt in separate.items():
            pairs = [(g, v) for g, v in zip(grads, reference.trainable_variables, strict=True)
                     if v.path.startswith(layer_name + "/")]
            opt.apply([g for g, _ in pairs], [v for _, v in pairs])
    for a, b in zip(ours.trainable_variables, reference.trainable_variables, strict=True):
        assert a.dtype == "float64"
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-15, err_msg=a.path)
    assert int(optimizer.iterations) == 7


def test_layerwise_rates_compose_with_accumulation_loss_scaling_and_saving(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 4)), rng.normal(size=(32, 1))
    large = _model()
    large.compile(LayerwiseLearningRate(keras.optimizers.Adam(0.01), GROUPS), "mse")
    large.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
    small = _model()
    small.compile(GradientAccumulator(
        keras.optimizers.LossScaleOptimizer(
            LayerwiseLearningRate(keras.optimizers.Adam(0.01), GROUPS)), steps=4), "mse")
    small.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(small.trainable_variables, large.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-12, err_msg=a.path)
    # the state survives .keras save/load: one more epoch from the file equals one more here
    small.save(tmp_path / "m.keras")
    revived = keras.saving.load_model(tmp_path / "m.keras")
    for model in (small, revived):
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(revived.trainable_variables, small.trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_swap_ema_weights_evaluates_on_the_average_through_the_wrappers():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(32, 4)), rng.normal(size=(32, 1))
    model = _model()
    inner = keras.optimizers.AdamW(0.05, use_ema=True, ema_momentum=0.5)
    model.compile(GradientAccumulator(LayerwiseLearningRate(inner, GROUPS), steps=2), "mse")
    for i in range(8):  # train_on_batch: fit would copy the averages in at its end
        model.train_on_batch(x[i * 4:(i + 1) * 4], y[i * 4:(i + 1) * 4])
    raw = {v.path: v.numpy().copy() for v in model.trainable_variables}
    averages = {
        v.path: a.numpy().copy()
        for copy in model.optimizer.inner_optimizer.group_optimizers.values()
        for v, a in zip(copy._trainable_variables, copy._model_variables_moving_average,
                        strict=True)
    }
    assert averages.keys() == raw.keys()
    assert all(not np.allclose(averages[p], raw[p]) for p in raw)
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=False)
    swap.set_model(model)
    swap.on_test_begin()  # what evaluate does inside fit's validation
    for v in model.trainable_variables:
        # Keras swaps by sums and differences: equal to a few ulps
        np.testing.assert_allclose(v.numpy(), averages[v.path], rtol=1e-12, atol=1e-15)
    swap.on_test_end()
    for v in model.trainable_variables:
        np.testing.assert_allclose(v.numpy(), raw[v.path], rtol=1e-12, atol=1e-15)  # raw again


def test_layerwise_decay_of_a_backbone():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=3, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=16,
    )
    multipliers = layerwise_decay(backbone, 0.5)
    optimizer = LayerwiseLearningRate(keras.optimizers.SGD(1.0), multipliers)
    factor = {v.path: optimizer.factor_for(v) for v in backbone.weights}
    assert factor["token_embedding/embeddings"] == 0.5**4
    assert factor["embeddings_layer_norm/gamma"] == 0.5**4
    layer0 = [p for p in factor if p.startswith("transformer_layer_0/")]
    layer2 = [p for p in factor if p.startswith("transformer_layer_2/")]
    assert layer0 and {factor[p] for p in layer0} == {0.5**3}
    assert layer2 and {factor[p] for p in layer2} == {0.5}
    assert factor["pooled_dense/kernel"] == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(multipliers=[("a", 1.0)]), "must be a dict"),
    (dict(multipliers={"a": -1.0}), "multipliers"),
    (dict(multipliers={"a": np.nan}), "multipliers"),
    (dict(multipliers={"(": 1.0}), "not a valid regular expression"),
    (dict(multipliers={3: 1.0}), "regular expressions"),
    (dict(default=np.inf), "default"),
    (dict(inner_optimizer="adam"), "inner_optimizer"),
    (dict(inner_optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())),
     "inner_optimizer"),
])
def test_layerwise_rates_refuse_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerwiseLearningRate(**(dict(inner_optimizer=keras.optimizers.SGD(), multipliers={})
                                 | kwargs))
    with pytest.raises(ValueError, match="decay"):
        layerwise_decay(None, 1.5)


def test_keras_file_of_the_layerwise_optimizer_stores_each_slot_once(tmp_path):
    sizes = []
    for optimizer in (LayerwiseLearningRate(keras.optimizers.Adam(0.01), GROUPS),
                      keras.optimizers.Adam(0.01)):
        model = keras.Sequential([keras.Input((300,)), keras.layers.Dense(300, name="low"),
                                  keras.layers.Dense(300, name="top")])
        model.compile(optimizer, "mse")
        model.fit(np.ones((4, 300)), np.ones((4, 300)), verbose=0)
        model.save(tmp_path / "f.keras")
        sizes.append(os.path.getsize(tmp_path / "f.keras"))
    slots = 2 * 4 * model.count_params()  # Adam's m and v in float32
    assert abs(sizes[0] - sizes[1]) < 0.05 * slots, sizes  # each slot once


def _wide_model(optimizer):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((300,)), keras.layers.Dense(300),
                              keras.layers.Dense(300)])
    model.compile(optimizer, "mse")
    return model


def test_accumulator_keras_file_is_the_inner_file_plus_one_float32_copy(tmp_path, monkeypatch):
    x = np.random.default_rng(0).normal(size=(8, 300))
    sizes = []
    for optimizer in (GradientAccumulator(keras.optimizers.Adam(0.01), steps=2),
                      keras.optimizers.Adam(0.01)):
        model = _wide_model(optimizer)
        model.fit(x, x, batch_size=4, verbose=0)
        model.save(tmp_path / "f.keras")
        sizes.append(os.path.getsize(tmp_path / "f.keras"))
    accumulators = 4 * model.count_params()  # float32
    assert abs(sizes[0] - sizes[1] - accumulators) < 0.02 * accumulators, sizes

    # a file saved the old way (every inner slot twice) still loads, mid-window, exactly
    model = _wide_model(GradientAccumulator(keras.optimizers.Adam(0.01), steps=2))
    model.fit(x[:6], x[:6], batch_size=2, verbose=0)  # 3 micro-steps: one left in the window
    with monkeypatch.context() as patch:
        patch.setattr(GradientAccumulator, "save_own_variables",
                      keras.optimizers.Optimizer.save_own_variables)
        model.save(tmp_path / "old.keras")
    assert os.path.getsize(tmp_path / "old.keras") > sizes[0] + 0.9 * 2 * accumulators
    revived = keras.saving.load_model(tmp_path / "old.keras")
    for m in (model, revived):
        m.fit(x[6:], x[6:], batch_size=2, verbose=0)
    # JAX compiles the revived model's step anew, and XLA may order the 300-term float32
    # sums of that compilation differently: equal to float32 rounding there
    exact = keras.backend.backend() == "tensorflow"
    for a, b in zip(revived.trainable_variables, model.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=0 if exact else 1e-6)
    assert int(revived.optimizer.iterations) == int(model.optimizer.iterations) == 2


def test_float64_rates_stay_float64_through_the_wrapper():
    """One SGD step of a float64 model equals per-group float64 SGD exactly (the rate
    was rounded to float32 on its way through the wrapper: 1.1e-10 off)."""
    keras.config.set_floatx("float64")
    try:
        rng = np.random.default_rng(4)
        x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 1))
        for rate in (0.05, warmup_linear_decay(0.05, 0, 10)):
            ours, reference = _model(), _model()
            # the squared error of the one output (Keras's "mse" averages in float32 on JAX)
            ours.compile(LayerwiseLearningRate(keras.optimizers.SGD(rate), GROUPS),
                         lambda t, p: keras.ops.sum(keras.ops.square(t - p), axis=-1))
            grads = _grads(reference, x, y)
            ours.fit(x, y, batch_size=16, verbose=0, shuffle=False)
            for g, v, w in zip(grads, reference.trainable_variables, ours.trainable_variables,
                               strict=True):
                factor = {"low": 0.25, "mid": 0.5}.get(v.path.split("/")[0], 1.0)
                np.testing.assert_array_equal(w.numpy(), v.numpy() - 0.05 * factor * np.asarray(g))
    finally:
        keras.config.set_floatx("float32")


def test_learning_rate_is_settable_through_the_wrappers_and_callbacks():
    """ReduceLROnPlateau / LearningRateScheduler set the base rate; each group runs at
    its factor times it (bert4keras users lower the rate on plateau)."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 1))
    for wrap in (lambda o: o, lambda o: GradientAccumulator(o, 2)):
        model = _model()
        optimizer = wrap(LayerwiseLearningRate(keras.optimizers.SGD(0.04), GROUPS))
        model.compile(optimizer, "mse")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.04 / (epoch + 1))])
        assert float(optimizer.learning_rate) == pytest.approx(0.02)
        llr = getattr(optimizer, "inner_optimizer", optimizer)
        rates = {f: float(c.learning_rate) for f, c in llr.group_optimizers.items()}
        assert rates == pytest.approx({0.25: 0.005, 0.5: 0.01, 1.0: 0.02})
        plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=1e9)
        model.fit(x, y, epochs=2, verbose=0, callbacks=[plateau])  # lowered after epoch 2
        assert float(optimizer.learning_rate) == pytest.approx(0.01)
        assert float(llr.group_optimizers[0.25].learning_rate) == pytest.approx(0.0025)
    scheduled = LayerwiseLearningRate(keras.optimizers.SGD(warmup_linear_decay(1.0, 1, 9)), {})
    with pytest.raises(TypeError, match="LearningRateSchedule"):
        scheduled.learning_rate = 0.1


def test_pattern_that_matches_nothing_is_warned_about():
    model = _model()
    model.compile(LayerwiseLearningRate(keras.optimizers.SGD(0.1), {".*/bdy/.*": 0.1}), "mse")
    with pytest.warns(UserWarning, match=r"\['\.\*/bdy/\.\*'\] match no variable"):
        model.optimizer.build(model.trainable_variables)


@pytest.mark.parametrize("inner", [
    lambda: GradientAccumulator(keras.optimizers.SGD(), 2),
    lambda: LayerwiseLearningRate(keras.optimizers.SGD(), {}),
])
def test_wrappers_inside_the_layerwise_optimizer_are_refused_with_the_right_nesting(inner):
    with pytest.raises(ValueError, match=r"GradientAccumulator\(LossScaleOptimizer\("
                                         r"LayerwiseLearningRate\(opt"):
        LayerwiseLearningRate(inner(), {})


def test_layerwise_decay_refuses_what_is_not_a_backbone():
    with pytest.raises(ValueError, match="backbone='bert'"):
        layerwise_decay("bert", 0.9)


def test_assignment_of_another_model_is_refused():
    optimizer = LayerwiseLearningRate(keras.optimizers.SGD(), {}, assignment=[1.0, 0.5])
    with pytest.raises(ValueError, match="another model"):
        optimizer.build(_model().trainable_variables)


def test_piecewise_linear_beyond_float32_steps_and_below_zero():
    """Steps past 2**24 (where float32 stops counting) are exact; negative steps read 0."""
    schedule = PiecewiseLinear(1.0, {2**30: 1.0})
    keras.config.set_floatx("float64")
    try:
        for step in (2**24 + 1, 2**25 + 3, 2**30 - 1):
            assert float(schedule(np.int64(step))) == step / 2**30  # exact in float64
    finally:
        keras.config.set_floatx("float32")
    assert float(schedule(-5)) == float(schedule(0)) == 0.0
