"""Keras 3's `fit` across worker processes (`tf.distribute.MultiWorkerMirroredStrategy`)."""

from keras_space.api_export import keras_space_export

_ENABLED = []  # the original Keras functions, once patched


def _first_replica_spec(spec):
    """The spec of one replica's part of a distributed dataset's element (a spec as is)."""
    specs = getattr(spec, "_value_specs", None)  # tf.distribute's PerReplicaSpec
    return specs[0] if specs else spec


@keras_space_export("keras_space.utils.enable_multi_worker_fit", serializable=False, backends=("tensorflow",))
def enable_multi_worker_fit():
    """Let Keras 3's `fit` run under `tf.distribute.MultiWorkerMirroredStrategy`.

    Keras 3.15's TensorFlow trainer fails there on every model (keras-team/keras#20585):
    before the first step it averages a whole input batch across workers, only to read
    its shapes (`ValueError: Attempt to convert a value (PerReplica: ...)`), and after
    each step it averages the scalar logs along an axis 0 they do not have (`Invalid
    reduction dimension 0 for input with 0 dimensions`). This mends both, in Keras's
    trainer, for every model (plain `keras.Model`s, `GradCacheModel`, any optimizer):
    the build reads the shapes of one replica's batch from the dataset's element spec
    (no batch is read, so a dataset reshuffled on each pass trains on the same order as
    in one process), and the logs are averaged across replicas as `MirroredStrategy`
    averages them on one machine. It also turns off Grappler's arithmetic optimizer
    (process-wide): its rewrite of long sums into temporary variables made the first
    step of a `GradCacheModel` on the pretrained MiniLM fail across workers with
    `AlreadyExistsError: Resource __per_step_0/.../AddOpsRewrite.../tmp_var`. Nothing
    else changes, and under any other strategy Keras's trainer runs as before. Call it
    once, before `fit`; calling it again does nothing. Remove the call once Keras fixes
    its trainer (the tests tell: they check that plain Keras still fails).

    Tested with two worker processes on 127.0.0.1 (float64): a plain model, a
    `GradCacheModel` (global negatives: each worker's anchors see the other's
    positives) and `GradientAccumulator(LayerwiseLearningRate(AdamW))` end their
    `fit` with the weights and losses of one process training on the global batch; a
    worker that dies mid-epoch makes the other's `fit` raise `tf.errors.UnavailableError`
    (TensorFlow's own check) within seconds.

    Example (each worker runs the same script; `TF_CONFIG` names the cluster and this
    worker, e.g. set by `keras_space.testing.run_workers`):

    ```python notest
    import keras, tensorflow as tf
    from keras_space.utils import enable_multi_worker_fit

    enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
    model.fit(x, y, batch_size=64)   # 64: the global batch, split across the workers
    ```
    """
    if _ENABLED:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    tf.config.optimizer.set_experimental_options({"arithmetic_optimization": False})

    build, reduce_per_replica = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return build(self, iterator=iterator, data_batch=data_batch)
        # The build reads only shapes and dtypes: those of one replica's batch, from the
        # dataset's element spec. (Reading a batch, as Keras does, would start a pass
        # over the data that no step uses: a dataset reshuffled on each pass would then
        # train on its second order, unlike one process.)
        spec = iterator._distributed_dataset.element_spec
        return build(self, data_batch=trainer.tree.map_structure(_first_replica_spec, spec))

    def reduce_logs(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return trainer.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer.reduce_per_replica = reduce_logs
    _ENABLED.append((build, reduce_per_replica))
