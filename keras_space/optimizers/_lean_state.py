"""What the wrapper optimizers share (private): lean saving, and their EMA.

`moving_averages(optimizer, variables)` finds the EMA of `variables` inside a
nesting of wrappers. `keras.callbacks.SwapEMAWeights` looks one
`inner_optimizer` deep and reads `_trainable_variables` and
`_model_variables_moving_average` there: the wrappers answer the second from
the optimizers that really hold the averages.

Save a wrapper optimizer's own variables only:

Keras's `Optimizer.save_own_variables` writes `self.variables`; a wrapper whose
`variables` also lists its inner optimizers' (as `GradientAccumulator` and
`keras.optimizers.MultiOptimizer` do, so that `get_weights`/checkpoints see the
whole state) would store every inner slot twice in a `.keras` file, since the
inner optimizers, as attributes, write their own. This mixin writes only the
wrapper's own variables and still loads a file written the old way (own
variables first, then the inner ones, which it skips: the inner optimizers load
their copy from their own entries).
"""

import warnings

import keras


class OwnVariablesOnly:
    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            store[str(i)] = variable.numpy()

    def load_own_variables(self, store):
        own, saved = len(self._variables), len(store.keys())
        if saved not in (own, len(self.variables)):  # lean, or the duplicated layout
            warnings.warn(
                f"Skipping variable loading for optimizer '{self.name}': it has {own} own "
                f"variables whereas the saved optimizer has {saved}.",
                stacklevel=2,
            )
            return
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])


def moving_averages(optimizer, variables):
    """The EMA variables of `variables`, in that order, held inside `optimizer`.

    Raises AttributeError when no optimizer inside keeps an EMA (so `hasattr`
    reads False, as on a plain optimizer without `use_ema`).
    """
    while hasattr(optimizer, "inner_optimizer"):  # GradientAccumulator, LossScaleOptimizer
        optimizer = optimizer.inner_optimizer
    table = {
        id(v): a
        for v, a in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average,
            strict=True,
        )
    }
    return [table[id(v)] for v in variables]


def unshare_buffers(variables):
    """On JAX, give each variable its own buffer after an EMA overwrite.

    `finalize_variable_values` assigns each average to its model variable, so both
    hold the same JAX array, and the next `fit` donates that buffer twice ("Attempt
    to donate the same buffer twice": a second `fit` with `use_ema=True` fails so in
    Keras 3.15 with any optimizer). The wrappers copy the values once there.
    """
    if keras.backend.backend() != "jax":
        return
    for variable in variables:
        variable.assign(keras.ops.copy(variable.value))


def checked_apply_arguments(optimizer, grads, trainable_variables):
    """(grads, variables) for a wrapper's `apply`: built on first use, one gradient per
    variable, only the variables it was built for (it keeps state per variable)."""
    grads = list(grads)
    if trainable_variables is None:
        if not optimizer.built:
            raise ValueError(
                "Call `optimizer.build(trainable_variables)` or pass `trainable_variables`."
            )
        trainable_variables = optimizer._trainable_variables
    trainable_variables = list(trainable_variables)
    if not optimizer.built:
        with keras.name_scope(optimizer.name, caller=optimizer):
            optimizer.build(trainable_variables)
        optimizer.built = True
    if len(grads) != len(trainable_variables):
        raise ValueError(f"Got {len(grads)} gradients for {len(trainable_variables)} variables.")
    known = {id(v) for v in optimizer._trainable_variables}
    unknown = [v.path for v in trainable_variables if id(v) not in known]
    if unknown:
        raise ValueError(
            f"{type(optimizer).__name__} was built for other variables (it keeps state per "
            f"variable it was built with). Received unknown variables: {unknown[:5]}"
        )
    return grads, trainable_variables
