"""Keras 3's data parallelism on JAX (`keras.distribution.DataParallel`) over two
processes (`jax.distributed`, a coordinator on 127.0.0.1, CPU collectives) of two host
devices each (`--xla_force_host_platform_device_count=2`): the global batch split
across the four devices trains as on one device, in float64; a process killed mid-run is
reported, and the job restarted from its backups resumes as one device does. (Several
devices in one process and several processes are one code path in Keras: the mesh spans
every device of every process; these launches have both.)"""

import os

import keras
import pytest

from keras_space.testing import run_workers
from tests.distributed_runs import RUNS

pytestmark = [pytest.mark.slow, pytest.mark.all_backends,  # run by the JAX session
              pytest.mark.skipif(keras.backend.backend() != "jax",
                                 reason="JAX's keras.distribution (the JAX session runs it)")]

COMMON = """
import jax, numpy as np, keras
""" + RUNS + """
keras.config.set_floatx("float64"); keras.config.set_dtype_policy("float64")

def trained(distribution, build, fit):
    keras.distribution.set_distribution(distribution)
    try:
        keras.utils.set_random_seed(0)
        model = build()
        fit(model)
        return model
    finally:
        keras.distribution.set_distribution(None)

def grad_cache():
    return grad_cache_model(keras.optimizers.SGD(0.5))

def fit_grad_cache(model):
    model.fit((a, p, n), labels, sample_weight=w, batch_size=32, epochs=2, shuffle=False, verbose=0)

def fit_accumulated(model):
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)  # 8 steps: window 2 of 3
"""

# Each process feeds its own rows (Keras's multi-process input: `auto_shard_dataset` off
# for numpy arrays): its half of every global batch, in order, which Keras splits between
# its two devices.
IN_PROCESSES = """
import os, jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                           int(os.environ["JAX_PROCESS_ID"]))
""" + COMMON + """
def mine(v, rows):  # this process's `rows` of every global batch of 2 * rows
    i = jax.process_index()
    return np.concatenate([v[k + i * rows:k + (i + 1) * rows] for k in range(0, len(v), 2 * rows)])

everywhere = keras.distribution.DataParallel(devices=jax.devices())
everywhere.auto_shard_dataset = False
"""

# STAGE=killed (one device per process): the backed-up run of
# tests/utils/multi_worker_test.py (GradCacheModel with a learned temperature under
# GradientAccumulator(AdamW), 8 rows per process of every global batch of 16), in which
# process 1 is SIGKILLed at (epoch 1, batch 1) and process 0 reports how its fit ended.
# STAGE=resumed (two devices per process): the equalities (GradCacheModel and
# GradientAccumulator(LayerwiseLearningRate(AdamW)) on the four devices), then the job
# restarted from the backups (they hold values, not a layout), reporting its weights and
# step counters.
PROCESSES = IN_PROCESSES + """
import time
here = ((mine(a, 8), mine(p, 8), mine(n, 8)), mine(labels, 8), mine(w, 8))
folder = os.path.join(os.environ["BACKUP_DIR"], f"process{jax.process_index()}")
if os.environ["STAGE"] == "killed":
    start = time.monotonic()
    try:
        trained(everywhere, resumable_model, lambda model: fit_resumable(
            model, here, 8, folder, KILLED_AT if jax.process_index() == 1 else None, kill=True,
            last_words="killed"))
        print("RESULT finished")
    except Exception as e:
        print("RESULT", type(e).__name__, time.monotonic() - start, flush=True)
    # the job is over: leave without jax.distributed's shutdown, which would wait for
    # the dead process (its heartbeat timeout, 100 s)
    os._exit(0)

def fit_grad_cache_here(model):
    model.fit((mine(a, 16), mine(p, 16), mine(n, 16)), mine(labels, 16), sample_weight=mine(w, 16),
              batch_size=16, epochs=2, shuffle=False, verbose=0)

def fit_accumulated_here(model):
    model.fit(mine(x, 8), mine(y, 8), batch_size=8, epochs=2, shuffle=False, verbose=0)

assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2
g = trained(everywhere, grad_cache, fit_grad_cache_here)
o = trained(everywhere, accumulated_model, fit_accumulated_here)
# the distribution was in force: the trained kernel lives on all four devices
replicated = len(o.trainable_weights[0].value.sharding.device_set) == 4
resumed = trained(everywhere, resumable_model, lambda model: fit_resumable(model, here, 8, folder))
print("RESULT", ",".join(map(repr, flat(g).tolist())), ",".join(map(repr, flat(o).tolist())),
      int(o.optimizer.iterations.numpy()), int(o.optimizer.micro_step.numpy()), int(replicated),
      ",".join(map(repr, flat(resumed).tolist())), int(resumed.optimizer.iterations.numpy()),
      int(resumed.optimizer.micro_step.numpy()))
"""


def test_two_processes_train_as_one_device_and_resume_after_a_kill(tmp_path, monkeypatch):
    """Process 1 SIGKILLed mid-epoch: process 0's next collective fails with an error
    (gloo's, within seconds), not a hang. Restarted (two devices per process), the
    equalities hold, and the job resumed from BackupAndRestore's backups equals one
    device interrupted and restarted at the same step, step counters included. The
    one-device runs are made here, in the test's own process."""
    import numpy as np

    monkeypatch.setenv("BACKUP_DIR", str(tmp_path))
    monkeypatch.setenv("STAGE", "killed")
    killed = run_workers(PROCESSES, num_workers=2, timeout=240)
    assert killed[1] == ["killed"]
    assert killed[0][0].endswith("Error") and float(killed[0][1]) < 60, killed[0]
    monkeypatch.setenv("STAGE", "resumed")
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    restarted = run_workers(PROCESSES, num_workers=2, timeout=240)
    assert restarted[0] == restarted[1]  # both processes hold the same weights and counters

    namespace = {}
    exec(COMMON, namespace)  # noqa: S102 - the same builders, data and runs as the processes'
    one, flat, floats = namespace["trained"], namespace["flat"], namespace["floats"]
    for field, build, fit in ((0, "grad_cache", "fit_grad_cache"), (1, "accumulated_model", "fit_accumulated")):
        want = flat(one(None, namespace[build], namespace[fit]))
        np.testing.assert_allclose(floats(restarted[0][field]), want, rtol=1e-12, atol=1e-14, err_msg=build)
    assert restarted[0][2:5] == ["2", "2", "1"]

    fit, build, data, folder = namespace["fit_resumable"], namespace["resumable_model"], namespace["tuples"], tmp_path / "one"
    keras.utils.set_random_seed(0)
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(build(), data, 16, folder, namespace["KILLED_AT"])
    keras.utils.set_random_seed(0)
    alone = fit(build(), data, 16, folder)
    np.testing.assert_allclose(floats(restarted[0][5]), flat(alone), rtol=1e-12, atol=1e-14)
    # 14 micro-steps: 4 optimizer steps, 2 into the next window
    assert restarted[0][6:] == ["4", "2"] == [str(int(alone.optimizer.iterations.numpy())),
                                            str(int(alone.optimizer.micro_step.numpy()))]
