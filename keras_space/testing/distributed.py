"""Running a script on several logical CPU devices (a stand-in for several GPUs), or in
several worker processes on this machine (a stand-in for several machines)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from keras_space.api_export import keras_space_export

_PREAMBLE = """\
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from keras_space.utils._lazy import tensorflow as tf
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * {num_devices}
)
"""


@keras_space_export("keras_space.testing.run_on_logical_cpus", serializable=False, backends=("tensorflow",))
def run_on_logical_cpus(script, num_devices=2, timeout=600):
    """Run `script` in a fresh Python process whose CPU is split into
    `num_devices` logical devices (TensorFlow must be configured before it
    starts, hence the process), and return the fields of the line it prints
    starting with "RESULT" (without that word).

    Raises:
        AssertionError: no RESULT line was printed (the error output is shown).
    """
    code = _PREAMBLE.format(num_devices=num_devices) + textwrap.dedent(script)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    return _result(out.stdout, out.stderr)


def _result(stdout, stderr):
    """The fields of the last line of `stdout` starting with RESULT (AssertionError showing
    the end of `stderr` when there is none)."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
    assert lines, stderr[-3000:]
    return lines[-1].split()[1:]


def _free_ports(count):
    """`count` TCP ports on 127.0.0.1 that nothing listens on now (held open together while
    picked, so they differ; another program could still take one before the workers do)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@keras_space_export("keras_space.testing.run_workers", serializable=False)
def run_workers(script, num_workers=2, timeout=300):
    """Run `script` in `num_workers` fresh Python processes that form one cluster on this
    machine, and return, per worker, the fields of the line it prints starting with
    "RESULT".

    Each process is told the cluster (127.0.0.1, ports free when this is called) and
    its own index both ways: TensorFlow's `TF_CONFIG`, so
    `tf.distribute.MultiWorkerMirroredStrategy()` in `script` spans every process (one
    CPU device each), and `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`, for `jax.distributed.initialize(...)` (with
    `jax.config.update("jax_cpu_collectives_implementation", "gloo")` on CPUs). The same
    script runs on real machines given their values. Every process is ended (SIGKILL, by
    its pid) once all have finished or `timeout` seconds have passed, whichever is first.

    Raises:
        TimeoutError: a worker was still running after `timeout` seconds (a worker that
            died leaves the others waiting in a collective): the end of each worker's
            error output is shown.
        AssertionError: a worker printed no RESULT line (its error output is shown).
    """
    from keras_space.utils import validation

    num_workers = validation.positive_int("num_workers", num_workers, minimum=2)
    timeout = validation.positive_float("timeout", timeout)
    if not isinstance(script, str):
        raise ValueError(f"`script` must be Python source code (a str). Received: script={script!r}")
    hosts = [f"127.0.0.1:{port}" for port in _free_ports(num_workers + 1)]
    coordinator, hosts = hosts[-1], hosts[:-1]
    code = textwrap.dedent(script)
    processes, logs = [], []
    try:
        for index in range(num_workers):
            config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(config), "CUDA_VISIBLE_DEVICES": "",
                   "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_COORDINATOR_ADDRESS": coordinator,
                   "JAX_NUM_PROCESSES": str(num_workers), "JAX_PROCESS_ID": str(index)}
            out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
            logs.append((out, err))
            processes.append(subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err,
                                              env=env, text=True))
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                break
    finally:
        late = [p.poll() is None for p in processes]
        for process in processes:
            if process.poll() is None:
                process.kill()  # by its pid
                process.wait()
    texts = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    if any(late):
        tails = "\n".join(f"worker {i}{' (still running)' if late[i] else ''}: {err[-1500:]}"
                          for i, (_, err) in enumerate(texts))
        raise TimeoutError(f"{sum(late)} of {num_workers} workers still ran after {timeout} s:\n{tails}")
    return [_result(out, err) for out, err in texts]
