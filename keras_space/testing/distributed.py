"""Running a script on several logical CPU devices (a stand-in for several GPUs)."""

import os
import subprocess
import sys
import textwrap

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
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, out.stderr[-3000:]
    return lines[-1].split()[1:]
