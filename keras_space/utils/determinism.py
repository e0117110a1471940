"""Seeded runs that repeat bit for bit."""

import warnings

import keras

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


@keras_space_export("keras_space.utils.set_deterministic")
def set_deterministic(seed):
    """Seed Python, NumPy and the backend, and make TensorFlow ops deterministic.

    `keras.utils.set_random_seed(seed)` alone does not make a run repeat: on
    the CPU, TensorFlow's reductions and some kernels (e.g. the gradient of an
    embedding lookup, `UnsortedSegmentSum`) add in a thread-dependent order,
    so two runs with the same seed drift apart over a few hundred steps (a
    few-shot P-tuning run ended 3.4 accuracy points apart). This also

    - calls `tf.config.experimental.enable_op_determinism()`, which picks
      deterministic kernels (and refuses the few ops that have none);
    - runs independent graph ops one at a time
      (`tf.config.threading.set_inter_op_parallelism_threads(1)`; each op
      still uses every core). Without it, the order in which a `fit` step's
      independent ops finish changed the prompt gradients of a frozen
      MiniLM in the last bits from one process to the next (the same seed
      gave held-out accuracies 1.2 points apart in three processes); with
      it, eight processes gave bit-identical weights.

    Both are process-wide and cannot be undone, and the thread setting can
    only be made before TensorFlow runs its first op: call this first thing
    in a script. Called later, it still seeds and enables op determinism,
    and warns that runs may differ across processes. Examples and
    benchmarks of this package call it.

    On JAX it seeds Python, NumPy and Keras only: XLA's CPU kernels are
    deterministic (two seeded P-tuning runs give bit-identical weights, tested).

    Args:
        seed: a non-negative int.

    Example:

    ```python
    from keras_space.utils import set_deterministic

    set_deterministic(0)   # first thing; then build and fit: the same numbers every run
    ```
    """
    seed = validation.non_negative_int("seed", seed)
    if keras.backend.backend() != "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import tensorflow as tf

    if tf.config.threading.get_inter_op_parallelism_threads() != 1:
        try:  # before set_random_seed, which may start TensorFlow
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            warnings.warn(
                "set_deterministic() was called after TensorFlow started, so "
                "independent ops still run in parallel and results may differ "
                "in the last bits from one process to the next. Call it before "
                "any TensorFlow op (first thing in the script).",
                stacklevel=2,
            )
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
