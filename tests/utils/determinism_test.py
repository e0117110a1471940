"""set_deterministic: seeded P-tuning runs repeat bit for bit (in a fresh process: op
determinism is process-wide and cannot be switched off again)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_space.utils import set_deterministic

RUN = r"""
import numpy as np, keras, keras_hub
from keras_space.models import p_tuning_model
from keras_space.utils import set_deterministic

def run():
    set_deterministic(3)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=64, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32, max_sequence_length=32)
    model = p_tuning_model(backbone, num_virtual_tokens=4, encoder="lstm", dropout=0.1,
                           head="causal_lm", label_token_ids=[10, 11])
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(5, 60, (32, 12)).astype("int32"),
         "padding_mask": np.ones((32, 12), "int32")}
    model.compile(keras.optimizers.AdamW(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, rng.integers(0, 2, 32), batch_size=8, epochs=1, verbose=0)  # shuffled, dropout
    return [np.asarray(w) for w in model.trainable_weights]
"""

SCRIPT = r"""
import warnings
import numpy as np, tensorflow as tf
from tensorflow.python.framework import config as tf_config
from keras_space.utils import set_deterministic

with warnings.catch_warnings():
    warnings.simplefilter("error")
    set_deterministic(3)  # first thing: independent ops then run one at a time
assert tf.config.threading.get_inter_op_parallelism_threads() == 1
""" + RUN + r"""
first, second = run(), run()
assert tf_config.is_op_determinism_enabled()
for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a, b)
print("same")
"""


@pytest.mark.slow
@pytest.mark.all_backends
def test_seeded_p_tuning_runs_repeat_bit_for_bit():
    """Two seeded runs give bit-identical weights: on TensorFlow in a fresh process
    (op determinism is process-wide and cannot be switched off again), on JAX in this
    one (set_deterministic seeds; XLA's CPU kernels are deterministic)."""
    if keras.backend.backend() == "jax":
        namespace = {}
        exec(RUN, namespace)  # noqa: S102 - the same run as the TensorFlow script's
        first, second = namespace["run"](), namespace["run"]()
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
        return
    # TensorFlow's own thread pools, as a user has them (not the suite's one thread each)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and "same" in out.stdout, out.stderr[-3000:]


@pytest.mark.tensorflow_only("TensorFlow's thread settings")
def test_called_after_tensorflow_started_warns():
    """In this process TensorFlow has started: the thread setting can no longer change, so
    it warns. (It still enables op determinism in this worker, as the docstring example
    of `set_deterministic` does in whichever worker runs it: every test passes either way.)"""
    import tensorflow as tf

    tf.constant(1.0) + 1
    with pytest.warns(UserWarning, match="first thing in the script"):
        set_deterministic(0)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        set_deterministic(seed)
