"""GradientAccumulator: exact large-batch updates from k micro-batches.

The dense path uses `keras.ops`; on JAX, `fit` calls `stateless_apply`, which
computes the new accumulators, counter and (every k-th call) the inner
optimizer's `stateless_apply` as values, selected by `ops.cond` (nothing is
assigned inside the traced branches). The sparse path (`tf.IndexedSlices` from
`Embedding` gradients, accumulated with `scatter_add`) and the replica path
(per-replica accumulators, `merge_call` once per real update under
`tf.distribute`) are TensorFlow-only.
"""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.optimizers._lean_state import (
    OwnVariablesOnly,
    checked_apply_arguments,
    moving_averages,
    unshare_buffers,
)
from keras_space.utils import validation

_BASE_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def _is_indexed_slices(g):
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(g, tf.IndexedSlices)


@keras_space_export("keras_space.optimizers.GradientAccumulator")
class GradientAccumulator(OwnVariablesOnly, keras.optimizers.Optimizer):
    """Wrap any Keras optimizer to apply the mean of `steps` micro-batch gradients.

    Every call to `apply` adds the gradients to float32 accumulators; every
    `steps`-th call hands their mean to the inner optimizer and clears them.
    The inner optimizer is the only one that updates weights, so its state
    (moments, bias-correction and weight-decay counters, clipping, EMA) and
    its learning-rate schedule advance once per real update: k micro-batches
    of size m give the same weights as one batch of k*m, for any optimizer.
    `iterations` and `learning_rate` are the inner optimizer's.

    - Sparse gradients (`tf.IndexedSlices`, e.g. from `Embedding`) are added
      with `scatter_add`, touching only their rows; the real update passes
      the rows with a non-zero accumulated gradient as `IndexedSlices`.
    - Accumulators are float32 (float64 for float64 weights), also under
      `mixed_float16`.
    - Under `tf.distribute` the accumulators are per replica (on-read
      variables) and gradients are all-reduced once per real update, by the
      inner optimizer.
    - The accumulators and the micro-step counter are optimizer variables:
      a `.keras` file or a checkpoint saved mid-window resumes exactly. A
      `.keras` file holds the inner optimizer's state once (plus one float32
      copy of the trainable weights: the accumulators).
    - With a `LossScaleOptimizer`: wrapped inside (`GradientAccumulator(
      LossScaleOptimizer(opt), k)`), the scaled gradients are accumulated
      (the scale only changes at real updates) and a non-finite micro-step
      makes the whole window's mean non-finite, so that update is skipped,
      the scale halves and the window restarts. Wrapped outside (what Keras
      does by itself under `mixed_float16`), a non-finite micro-step is
      dropped before it reaches the accumulators and the window waits for
      one more finite micro-batch.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that applies the
            updates.
        steps: number of micro-batches per update, >= 1.
        name: optional name. Defaults to `None`.

    Example:

    ```python
    import keras
    import numpy as np
    from keras_space.optimizers import GradientAccumulator

    x, y = np.random.rand(512, 8), np.random.randint(0, 3, 512)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, decay_steps=100)
    optimizer = GradientAccumulator(keras.optimizers.AdamW(schedule), steps=8)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, verbose=0)  # updates as with batch_size=256
    assert int(optimizer.iterations) == 2
    ```
    """

    def __init__(self, inner_optimizer, steps, name=None, **kwargs):
        if isinstance(inner_optimizer, dict):
            inner_optimizer = keras.optimizers.deserialize(inner_optimizer)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer instance. "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        steps = validation.positive_int("steps", steps)
        if inner_optimizer.gradient_accumulation_steps:
            raise ValueError(
                "`inner_optimizer` already accumulates gradients "
                f"(gradient_accumulation_steps={inner_optimizer.gradient_accumulation_steps}); "
                "use one or the other."
            )
        for key, default in _BASE_DEFAULTS.items():
            if key in kwargs and kwargs.pop(key) != default:
                raise ValueError(
                    f"GradientAccumulator does not take `{key}`; set it on the inner optimizer."
                )
        if kwargs:
            raise ValueError(f"GradientAccumulator does not take arguments {sorted(kwargs)}.")
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.steps = steps

    def build(self, var_list):
        self.micro_step = self.add_variable(
            shape=(),
            initializer="zeros",
            dtype="int",
            aggregation="only_first_replica",
            name="micro_step",
        )
        self._accumulators = []
        for variable in var_list:
            dtype = "float64" if variable.dtype == "float64" else "float32"
            with keras.name_scope(self.name, caller=self):
                accumulator = keras.Variable(
                    initializer="zeros",
                    shape=variable.shape,
                    dtype=dtype,
                    trainable=False,
                    aggregation="sum",
                    synchronization="on_read",
                    name=f"{variable.name}_accumulator",
                )
            self._track_variable(accumulator)
            self._accumulators.append(accumulator)
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        inner = self.inner_optimizer
        if isinstance(inner, keras.optimizers.LossScaleOptimizer):
            # SwapEMAWeights stops at this LossScaleOptimizer: give it the averages
            # (untracked: they are saved with the optimizer that owns them).
            try:
                averages = moving_averages(inner.inner_optimizer, var_list)
            except AttributeError:
                return
            object.__setattr__(inner, "_model_variables_moving_average", averages)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def _model_variables_moving_average(self):
        # for keras.callbacks.SwapEMAWeights (see _lean_state)
        return moving_averages(self.inner_optimizer, self._trainable_variables)

    @property
    def accumulators(self):
        """The accumulator variables, one per trainable variable."""
        return list(self._accumulators)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        """Real updates (the inner optimizer's iterations)."""
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)
        unshare_buffers(var_list)

    # --- the update -------------------------------------------------------

    def apply(self, grads, trainable_variables=None):
        grads, trainable_variables = checked_apply_arguments(self, grads, trainable_variables)
        if keras.backend.backend() == "tensorflow":
            self._tf_apply(grads, trainable_variables)
        else:
            self._stateless_assign(grads, trainable_variables)

    def _stateless_assign(self, grads, trainable_variables):
        """`apply` through `stateless_apply` (JAX: a traced `ops.cond` cannot assign).
        A variable passed with a None gradient counts as a zero gradient (as in the
        TensorFlow path); one not passed at all is left out of the update."""
        given = {id(v): ops.zeros(v.shape, v.dtype) if g is None else g
                 for g, v in zip(grads, trainable_variables, strict=True)}
        new_trainable, new_optimizer = self.stateless_apply(
            [v.value for v in self.variables],
            [given.get(id(v)) for v in self._trainable_variables],
            [v.value for v in self._trainable_variables],
        )
        for variable, value in zip(self._trainable_variables + self.variables,
                                   list(new_trainable) + list(new_optimizer), strict=True):
            variable.assign(value)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """`apply` as a pure function of the values (what Keras's JAX trainer calls).

        Returns (new trainable values, new optimizer values), the optimizer values in
        the order of `self.variables` (own variables, then the inner optimizer's).
        """
        if keras.backend.backend() == "tensorflow":
            return super().stateless_apply(optimizer_variables, grads, trainable_variables)
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {type(self).__name__} must be built: call "
                "`optimizer.build(trainable_variables)` first."
            )
        if len(optimizer_variables) != len(self.variables):
            raise ValueError(
                f"`optimizer_variables` must hold one value per optimizer variable "
                f"({len(self.variables)}). Received: {len(optimizer_variables)} values"
            )
        # Keras's LossScaleOptimizer passes its inner optimizer's variables themselves,
        # read in its StatelessScope: their values there are the ones to use.
        optimizer_variables, trainable_variables = (
            [v.value if isinstance(v, keras.Variable) else v for v in values]
            for values in (optimizer_variables, trainable_variables))
        own_count = len(self._variables)
        own = dict(zip(map(id, self._variables), optimizer_variables[:own_count], strict=True))
        inner_values = list(optimizer_variables[own_count:])
        trainable_values = list(trainable_variables)
        accumulators = [self._accumulator_for(v) for v in self._trainable_variables]
        accumulated = [
            own[id(acc)] if g is None else own[id(acc)] + ops.cast(g, acc.dtype)
            for g, acc in zip(grads, accumulators, strict=True)
        ]
        step = own[id(self.micro_step)] + 1

        def update():  # a variable without a gradient now is not updated (as in `apply`)
            means = [None if g is None else ops.cast(a / float(self.steps), v.dtype)
                     for g, a, v in zip(grads, accumulated, self._trainable_variables, strict=True)]
            new_trainable, new_inner = self.inner_optimizer.stateless_apply(
                inner_values, means, trainable_values)
            return (list(new_trainable), list(new_inner),
                    [ops.zeros_like(a) for a in accumulated], ops.zeros_like(step))

        def wait():
            return trainable_values, inner_values, accumulated, step

        new_trainable, new_inner, accumulated, step = ops.cond(step >= self.steps, update, wait)
        new_own = {id(self.micro_step): step}
        new_own.update(zip(map(id, accumulators), accumulated, strict=True))
        own_values = [new_own.get(id(v), own[id(v)]) for v in self._variables]
        return new_trainable, own_values + list(new_inner)

    def _accumulator_for(self, variable):
        return self._accumulators[self._get_variable_index(variable)]

    def _accumulate(self, grads, trainable_variables):
        for g, v in zip(grads, trainable_variables, strict=True):
            if g is None:
                continue
            acc = self._accumulator_for(v)
            if _is_indexed_slices(g):
                import tensorflow as tf

                acc.value.scatter_add(
                    tf.IndexedSlices(tf.cast(g.values, acc.dtype), g.indices, g.dense_shape)
                )
            else:
                acc.assign_add(ops.cast(g, acc.dtype))

    def _apply_accumulated(self, trainable_variables, sparse):
        grads = []
        for v, is_sparse in zip(trainable_variables, sparse, strict=True):
            acc = self._accumulator_for(v)
            mean = ops.cast(acc.value / float(self.steps), v.dtype)
            if is_sparse:
                import tensorflow as tf

                flat = tf.reshape(mean, (tf.shape(mean)[0], -1))
                rows = tf.reshape(tf.where(tf.reduce_any(flat != 0, axis=1)), (-1,))
                grads.append(tf.IndexedSlices(tf.gather(mean, rows), rows, tf.shape(mean, out_type=rows.dtype)))
            else:
                grads.append(mean)
        self.inner_optimizer.apply(grads, trainable_variables)
        for acc in self._accumulators:
            acc.assign(ops.zeros(acc.shape, acc.dtype))

    def _common_apply(self, grads, trainable_variables):
        sparse = [_is_indexed_slices(g) for g in grads]
        self._accumulate(grads, trainable_variables)
        self.micro_step.assign_add(1)

        def update():
            self._apply_accumulated(trainable_variables, sparse)
            self.micro_step.assign(0)

        ops.cond(ops.greater_equal(self.micro_step, self.steps), update, lambda: None)

    def _tf_apply(self, grads, trainable_variables):
        import tensorflow as tf

        if tf.distribute.in_cross_replica_context():
            raise ValueError("apply() must be called in a replica context.")
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            self._common_apply(grads, trainable_variables)
            return
        sparse = [_is_indexed_slices(g) for g in grads]

        def cross_replica(distribution, grads, trainable_variables):
            distribution.extended.call_for_each_replica(
                self._accumulate, args=(grads, trainable_variables)
            )
            self.micro_step.assign_add(1)

            def update():
                # Each replica hands its own partial mean to the inner
                # optimizer, which all-reduces once: one reduction per update.
                distribution.extended.call_for_each_replica(
                    self._apply_accumulated, args=(trainable_variables, sparse)
                )
                self.micro_step.assign(0)

            ops.cond(ops.greater_equal(self.micro_step, self.steps), update, lambda: None)

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(grads, trainable_variables)
        )

    # --- serialization ----------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "steps": self.steps,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
