"""Training across worker processes: two TensorFlow workers on 127.0.0.1
(`MultiWorkerMirroredStrategy`, `keras_space.testing.run_workers`) against one process
training on the same global batch, in float64."""

import pytest

from keras_space.testing import run_workers
from tests.distributed_runs import RUNS
from tests.speed import IN_A_FRESH_PROCESS

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow_only("tf.distribute across worker processes")]

# Every worker runs this. It first checks that plain Keras still fails (so the day
# Keras mends its trainer, this test says enable_multi_worker_fit can go), then trains
# on the two workers, and worker 0 also trains in one process (the default strategy)
# on the same global batches (shuffle=False; the input is split by data: each global
# batch of 32 gives each worker 16 rows) and compares. Each worker prints digests of
# its weights (equal on both) and worker 0 the comparisons.
COMMON = IN_A_FRESH_PROCESS + """
import os, time
import numpy as np, tensorflow as tf, keras
from keras_space.utils import enable_multi_worker_fit
""" + RUNS + """
workers = tf.distribute.MultiWorkerMirroredStrategy()
one = tf.distribute.get_strategy()
task = workers.cluster_resolver.task_id
reference = task == 0  # computes the one-process runs
out, compared = [], []

def resumable(strategy, stop_at=None, folder=None):
    # the backed-up run, stopped at `stop_at` (SIGKILL on the workers, an exception in
    # one process)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = resumable_model()
    folder = folder or os.path.join(os.environ["BACKUP_DIR"], f"worker{task}")
    return fit_resumable(model, tuples, 16, folder, stop_at, kill=strategy is workers,
                         last_words=" ".join(map(str, out)))

def digest(v):
    return f"{np.sum(v):.17g}/{np.linalg.norm(v):.17g}"
"""

SCRIPT = COMMON + """

def plain(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.1), "mse")
    return model, model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)

try:
    plain(workers)
    still_broken = 0
except ValueError:
    still_broken = 1

enable_multi_worker_fit()
keras.config.set_floatx("float64"); keras.config.set_dtype_policy("float64")
out.append(still_broken)

# a plain model: weights and the logged loss
m1, h1 = plain(workers)
out.append(digest(flat(m1)))
if reference:
    m2, h2 = plain(one)
    compared += [rel(flat(m1), flat(m2)), abs(h1.history["loss"][-1] - h2.history["loss"][-1])]

# GradCacheModel: tuples with hard negatives, a learned temperature, sample weights and
# labels (mask_duplicates); and the same data with each worker's 16 rows as a batch of
# its own (negatives only within a worker), which must be far from the global batch
def grad_cache(strategy, batch_size=32, accumulate=1):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        optimizer = keras.optimizers.SGD(0.5)
        model = grad_cache_model(GradientAccumulator(optimizer, accumulate) if accumulate > 1 else optimizer)
    h = model.fit((a, p, n), labels, sample_weight=w, batch_size=batch_size, epochs=2,
                  shuffle=False, verbose=0)
    return flat(model), h.history["loss"][-1]

g1, l1 = grad_cache(workers)
out.append(digest(g1))
if reference:
    g2, l2 = grad_cache(one)
    local, _ = grad_cache(one, batch_size=16, accumulate=2)
    compared += [rel(g1, g2), abs(l1 - l2), rel(local, g2)]

# GradientAccumulator(LayerwiseLearningRate(AdamW)) on a plain model, fed by a
# tf.data.Dataset of global batches shuffled with a fixed seed (the same order on every
# worker; tf.distribute's default auto-shard policy falls back to DATA for data in
# memory: each worker keeps its share of every global batch): the weights, and the step
# counters (optimizer steps and the micro-step in the window) on each worker
def accumulated(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = accumulated_model()
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=1).batch(16)
    model.fit(data, epochs=2, verbose=0)  # 8 steps: window 2 of 3
    return flat(model), int(model.optimizer.iterations.numpy()), int(model.optimizer.micro_step.numpy())

o1, it1, micro1 = accumulated(workers)
out += [digest(o1), it1, micro1]
if reference:
    o2, it2, micro2 = accumulated(one)
    compared += [rel(o1, o2), it2, micro2]

# worker 1 is killed (SIGKILL, by its pid) mid-epoch, in a run that backs up every step:
# worker 0's next collective fails with an error instead of waiting forever (RESUME
# then restarts the job from the backups)
start = time.monotonic()
try:
    resumable(workers, KILLED_AT if not reference else None)
    compared += ["finished", 0.0]
except tf.errors.OpError as e:
    compared += [type(e).__name__, time.monotonic() - start]
print("RESULT", *out, *compared)
"""

# The job restarted (both workers) from the backups the killed run left: it restores the
# last backup (epoch 1, batch 1) and, as Keras does, restarts that epoch from its first
# batch. Worker 0 also runs the job in one process, interrupted at the same step by an
# exception and restarted the same way.
RESUME = COMMON + """
enable_multi_worker_fit()
keras.config.set_floatx("float64"); keras.config.set_dtype_policy("float64")
model = resumable(workers)
out += [digest(flat(model)), int(model.optimizer.iterations.numpy()), int(model.optimizer.micro_step.numpy())]
if reference:
    folder = os.path.join(os.environ["BACKUP_DIR"], "one_process")
    try:
        resumable(one, KILLED_AT, folder)
    except RuntimeError:
        pass
    alone = resumable(one, folder=folder)
    compared += [rel(flat(model), flat(alone)), int(alone.optimizer.iterations.numpy())]
print("RESULT", *out, *compared)
"""


def test_two_workers_train_as_one_process_on_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path))
    results = run_workers(SCRIPT, num_workers=2, timeout=240)
    # both workers: plain Keras failed, the same weights (digests) and step counters
    assert results[0][:6] == results[1]
    still_broken, it1, micro1 = int(results[0][0]), int(results[0][4]), int(results[0][5])
    plain_err, plain_loss, gc_err, gc_loss, local_vs_global, acc_err = map(float, results[0][6:12])
    it2, micro2 = map(int, results[0][12:14])
    error, seconds = results[0][14], float(results[0][15])
    assert still_broken == 1, (
        "Keras's own fit now runs under MultiWorkerMirroredStrategy: "
        "enable_multi_worker_fit can be removed")
    assert plain_err < 1e-12 and plain_loss < 1e-12
    # global negatives: equal to one process on the global batch, and far from each
    # worker training on its own rows
    assert gc_err < 1e-10 and gc_loss < 1e-10 and local_vs_global > 1e-3
    assert acc_err < 1e-12 and it1 == it2 == 2 and micro1 == micro2 == 2
    # a worker that died: the other one's fit raised (TensorFlow's peer check) in bounded time
    assert error == "UnavailableError" and seconds < 60, (error, seconds)

    # restarted from the backups: both workers agree and equal one process interrupted
    # and restarted at the same step (14 micro-steps: 4 optimizer steps, 2 into the next
    # window; the temperature is a weight, restored once)
    resumed = run_workers(RESUME, num_workers=2, timeout=240)
    assert resumed[0][:3] == resumed[1]
    assert resumed[0][1:3] == ["4", "2"]
    assert float(resumed[0][3]) < 1e-12 and resumed[0][4] == "4"



@pytest.mark.parametrize("kwargs, match", [
    (dict(num_workers=1), "num_workers"), (dict(num_workers=2.0), "num_workers"),
    (dict(timeout=0), "timeout"), (dict(timeout=float("nan")), "timeout"),
    (dict(script=None), "script"),
])
def test_run_workers_refuses_bad_arguments_before_starting_anything(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_workers(**{"script": "print('RESULT 1')", **kwargs})


def test_run_workers_ends_workers_that_outlive_the_timeout_and_names_silent_ones():
    """Plain Python workers (no TensorFlow): one that never finishes is killed at the
    timeout (a TimeoutError names it); one that prints no RESULT line fails with its
    error output."""
    script = "import os, sys, time\nif os.environ['TF_CONFIG'].endswith('1}}'): time.sleep(60)\nprint('RESULT ok')"
    with pytest.raises(TimeoutError, match=r"(?s)1 of 2 workers still ran after 2.0 s:.*worker 1 \(still running\)"):
        run_workers(script, timeout=2)
    with pytest.raises(AssertionError, match="no such thing"):
        run_workers("import sys\nsys.exit('no such thing')")
