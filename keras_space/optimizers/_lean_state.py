"""Save a wrapper optimizer's own variables only (private).

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
