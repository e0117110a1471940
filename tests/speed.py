"""TensorFlow's test-speed settings, in the processes that run tests (conftest.py) and
in the fresh processes some tests start (their scripts begin with `IN_A_FRESH_PROCESS`).
Neither changes a result the tests check (the tests pass either way)."""

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the first lines of a fresh process's script (whatever its working folder)
IN_A_FRESH_PROCESS = f"""
import sys
sys.path.insert(0, {_ROOT!r})
from tests.speed import speed_up_tensorflow
speed_up_tensorflow()
"""


def speed_up_tensorflow():
    """Grappler off and one stack trace for every graph op (below): a tenth and a fifth
    of the time of the thousands of small graphs the tests trace and run a few times
    (the two workers of tests/utils/multi_worker_test.py: 60 -> 54 CPU-s)."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    _one_stack_trace_for_every_graph_op()


def _one_stack_trace_for_every_graph_op():
    """Graph ops carry one fixed Python stack trace.

    TensorFlow records the Python stack at every op it adds to a graph (for the
    "defined at" lines of errors raised later by that op); in these thousands of small
    traced steps that was a fifth of their time (four test modules side by side: 140 ->
    111 CPU-s). The ops here all carry the stack of this function instead: errors keep
    their messages and types (which the tests check), only their "defined at" lines
    point here. (Skipped where TensorFlow's ops module has no `tf_stack`.)
    """
    import types

    from tensorflow.python.framework import ops

    if not hasattr(getattr(ops, "tf_stack", None), "extract_stack"):
        return
    trace = ops.tf_stack.extract_stack()
    ops.tf_stack = types.SimpleNamespace(extract_stack=lambda stacklevel=1: trace)
