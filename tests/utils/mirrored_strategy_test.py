"""`tf.distribute.MirroredStrategy` on two logical CPU devices (a stand-in for two GPUs)
against one device on the same global batch: GradCacheModel's global negatives and
GradientAccumulator's window. One fresh process (the devices must be set before
TensorFlow starts) runs both."""

import pytest

from keras_space.testing import run_on_logical_cpus
from tests.distributed_runs import RUNS
from tests.speed import IN_A_FRESH_PROCESS

SCRIPT = IN_A_FRESH_PROCESS + """
import numpy as np, tensorflow as tf, keras
""" + RUNS + """
two, one = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), tf.distribute.get_strategy()

def trained(strategy, build, *fit_args, **fit_kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = build()
    h = model.fit(*fit_args, epochs=2, shuffle=False, verbose=0, **fit_kwargs)
    return model, h.history["loss"][0]

def pairs():  # the plain setting: pairs, in float32
    encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                                keras.layers.Dense(4)])
    model = GradCacheModel(encoder, micro_batch_size=8)
    model.compile(keras.optimizers.SGD(0.5), InfoNCE(0.1, symmetric=True))
    return model

out = []
(m1, l1), (m2, l2) = (trained(s, pairs, (a.astype("float32"), p.astype("float32")), batch_size=32)
                      for s in (one, two))
out += [rel(flat(m2), flat(m1)), abs(l1 - l2) / l1]

keras.config.set_floatx("float64"); keras.config.set_dtype_policy("float64")
# tuples with hard negatives, labels (mask_duplicates), sample weights, a learned temperature,
# the loss summed over the prefixes 2 and 4 (Matryoshka: InfoNCE's mean reduction, scaled once)
(m1, l1), (m2, l2) = (trained(s, lambda: grad_cache_model(keras.optimizers.SGD(0.5), (2, 4)), (a, p, n), labels,
                              sample_weight=w, batch_size=32) for s in (one, two))
out += [rel(flat(m2), flat(m1)), abs(l1 - l2) / l1]

# CoSENT: pairs with gold scores and weights (a ranking loss over the whole global batch)
def scored():
    from keras_space.losses import CoSENT
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="sigmoid"),
                                keras.layers.Dense(4)])
    model = GradCacheModel(encoder, micro_batch_size=8)
    model.compile(keras.optimizers.SGD(0.5), CoSENT())
    return model

scores = np.round(np.random.default_rng(1).uniform(0, 5, size=len(a)), 1)
(m1, l1), (m2, l2) = (trained(s, scored, (a, p), scores, sample_weight=w, batch_size=32) for s in (one, two))
out += [rel(flat(m2), flat(m1)), abs(l1 - l2) / l1]

# GradientAccumulator(LayerwiseLearningRate(AdamW)), 3 steps a window: 8 micro-steps
(m1, _), (m2, _) = (trained(s, accumulated_model, x, y, batch_size=16) for s in (one, two))
optimizer = m2.optimizer
# mid-window (2 of 3), each replica holds its own partial sum: nothing was reduced yet
local = [np.asarray(v) for v in two.experimental_local_results(optimizer.accumulators[0].value)]
out += [rel(flat(m2), flat(m1)), int(m1.optimizer.iterations.numpy()), int(optimizer.iterations.numpy()),
        int(optimizer.micro_step.numpy()), int(not np.allclose(local[0], local[1]))]
print("RESULT", *out)
"""


@pytest.mark.slow
@pytest.mark.tensorflow_only("tf.distribute.MirroredStrategy")
def test_mirrored_strategy_equals_one_device():
    """GradCacheModel: each replica's loss sees the whole batch as negatives; for tuples
    the labels and weights are gathered too and the temperature's gradient is counted
    once (also summed over Matryoshka prefixes); CoSENT ranks the pairs of the whole global batch (scores and weights gathered). GradientAccumulator: the same updates and step counters as one device, while
    each replica accumulates its own gradients until the window closes."""
    result = run_on_logical_cpus(SCRIPT)
    pair_err, pair_loss, err, loss_diff, cosent_err, cosent_loss, acc_err = map(float, result[:7])
    assert pair_err < 1e-5 and pair_loss < 1e-6  # float32
    assert err < 1e-10 and loss_diff < 1e-12 and acc_err < 1e-12  # float64
    assert cosent_err < 1e-10 and cosent_loss < 1e-12  # CoSENT over the global batch, float64
    assert result[7:] == ["2", "2", "2", "1"]
