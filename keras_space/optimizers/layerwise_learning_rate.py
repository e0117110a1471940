"""Layer-wise learning rates: one optimizer per learning-rate multiplier.

`LayerwiseLearningRate(inner, multipliers)` is a `keras.optimizers.MultiOptimizer`
whose sub-optimizers are copies of `inner` with the learning rate (float or
schedule) multiplied by each group's factor. That is exactly "a separate
optimizer per group": Adam's and AdamW's updates are invariant to gradient
scale, so scaling gradients would not do; AdamW's decoupled weight decay
(lr * wd * w) scales with the group's rate too.
"""

import re

import keras

from keras_space.api_export import keras_space_export
from keras_space.models import _backbones
from keras_space.optimizers._lean_state import OwnVariablesOnly
from keras_space.utils import validation


class _ScaledLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """factor * base(step) (base: a schedule or a number)."""

    def __init__(self, base, factor):
        self.base = base
        self.factor = factor

    def __call__(self, step):
        if isinstance(self.base, keras.optimizers.schedules.LearningRateSchedule):
            return self.factor * self.base(step)
        return self.factor * self.base

    def get_config(self):
        return {"base": keras.saving.serialize_keras_object(self.base), "factor": self.factor}


@keras_space_export("keras_space.optimizers.LayerwiseLearningRate")
class LayerwiseLearningRate(OwnVariablesOnly, keras.optimizers.MultiOptimizer):
    """Per-variable-group learning-rate multipliers around any Keras optimizer.

    Each variable gets the factor of the first pattern in `multipliers` whose
    regular expression matches its whole `variable.path` (`re.fullmatch`), or
    `default`. Variables with the same factor share one copy of
    `inner_optimizer` whose learning rate (a number or a schedule) is multiplied
    by that factor: the result equals separate optimizers per group, for any
    optimizer (Adam and AdamW included, whose updates do not scale with the
    gradient). `layerwise_decay(backbone, decay)` gives the standard layer-wise
    decay of a keras-hub backbone.

    Composes with `GradientAccumulator` (wrap this one inside it) and
    `LossScaleOptimizer` (outside); `use_ema=True` on the inner optimizer
    works with `keras.callbacks.SwapEMAWeights`; the state survives `.keras`
    save/load. `learning_rate` and `iterations` are the factor-1 copy's (the
    base rate, the number of updates).

    Args:
        inner_optimizer: an unbuilt `keras.optimizers.Optimizer` (its config
            is copied per group; `exclude_from_weight_decay` settings too).
        multipliers: dict {regex over `variable.path`: factor >= 0}.
        default: the factor of variables no pattern matches. Defaults to `1.0`.
        name: optional name.

    Example:

    ```python
    import keras
    from keras_space.optimizers import LayerwiseLearningRate, layerwise_decay

    optimizer = LayerwiseLearningRate(
        keras.optimizers.AdamW(2e-5, weight_decay=0.01),
        layerwise_decay(backbone, decay=0.9),  # embeddings 0.9**(L+1), layer i 0.9**(L-i)
    )
    model.compile(optimizer=optimizer, loss="mse")  # the head keeps the base rate
    ```
    """

    def __init__(self, inner_optimizer, multipliers, default=1.0, name=None, **kwargs):
        if isinstance(inner_optimizer, dict):
            inner_optimizer = keras.optimizers.deserialize(inner_optimizer)
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer) or isinstance(
            inner_optimizer, (keras.optimizers.MultiOptimizer, keras.optimizers.LossScaleOptimizer)
        ):
            raise ValueError(
                "`inner_optimizer` must be a plain keras.optimizers.Optimizer (wrap a "
                "LossScaleOptimizer or GradientAccumulator around this one instead). "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        if inner_optimizer.built:
            raise ValueError(
                "`inner_optimizer` must not be built yet: its copies start from its config. "
                f"Received: inner_optimizer={inner_optimizer.name} (built)"
            )
        if not isinstance(multipliers, dict):
            raise ValueError(
                "`multipliers` must be a dict {regex over variable.path: factor}. "
                f"Received: multipliers={multipliers!r}"
            )
        checked = {}
        for pattern, factor in multipliers.items():
            if not isinstance(pattern, str):
                raise ValueError(
                    "`multipliers` keys must be regular expressions over variable paths "
                    f"(strings). Received: key {pattern!r}"
                )
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"`multipliers` key {pattern!r} is not a valid regular expression: {error}"
                ) from None
            checked[pattern] = validation.non_negative_float("multipliers", factor)
        default = validation.non_negative_float("default", default)
        super().__init__(self._optimizer_for, name=name, **kwargs)
        self.multipliers = checked
        self.default = default
        self.inner_optimizer = inner_optimizer
        self._copies = {}
        # read now, eagerly: the copies are made when Keras builds, maybe inside a graph
        base = inner_optimizer._learning_rate
        if not isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = float(keras.ops.convert_to_numpy(inner_optimizer.learning_rate))
        self._base_learning_rate = base
        self._inner_config = inner_optimizer.get_config()
        for factor in sorted({*checked.values(), default}):  # now: Keras may build in a graph
            self._copy(factor)

    def factor_for(self, variable):
        """The learning-rate multiplier of `variable`."""
        for pattern, factor in self.multipliers.items():
            if re.fullmatch(pattern, variable.path):
                return factor
        return self.default

    def _copy(self, factor):
        if factor not in self._copies:
            inner, base = self.inner_optimizer, self._base_learning_rate
            config = dict(self._inner_config)
            config["name"] = f"{inner.name}_x{factor:g}"
            config["learning_rate"] = (
                base if factor == 1.0 else _ScaledLearningRate(base, factor)
            )
            copy = type(inner).from_config(config)
            for attribute in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern"):
                if hasattr(inner, attribute):
                    setattr(copy, attribute, getattr(inner, attribute))
            self._copies[factor] = copy
        return self._copies[factor]

    def _optimizer_for(self, variable):
        return self._copy(self.factor_for(variable))

    @property
    def learning_rate(self):
        return self._copy(1.0).learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        raise AttributeError(
            "Set the base learning rate on the inner optimizer before wrapping it."
        )

    def get_config(self):
        return {
            "inner_optimizer": keras.optimizers.serialize(self.inner_optimizer),
            "multipliers": dict(self.multipliers),
            "default": self.default,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["inner_optimizer"] = keras.optimizers.deserialize(
            config["inner_optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


@keras_space_export("keras_space.optimizers.layerwise_decay", serializable=False)
def layerwise_decay(backbone, decay):
    """Layer-wise learning-rate decay multipliers for a keras-hub backbone.

    With L transformer layers: the embedding stack gets decay**(L + 1), layer i
    (0 = the lowest) decay**(L - i), and everything above the last layer (the
    pooler, and any head outside the backbone, which no pattern names) 1.

    Args:
        backbone: a built keras-hub backbone (`BertBackbone`, ...).
        decay: the factor per layer, in (0, 1].

    Returns:
        A dict {exact variable path (escaped): factor} for `LayerwiseLearningRate`.

    Example:

    ```python
    multipliers = layerwise_decay(backbone, decay=0.9)
    optimizer = LayerwiseLearningRate(keras.optimizers.AdamW(2e-5), multipliers)
    ```
    """
    decay = validation.positive_float("decay", decay, maximum=1.0)
    layers = _backbones.transformer_layers(backbone)
    n = len(layers)
    factors = {}
    for i, layer in enumerate(layers):
        for variable in layer.weights:
            factors[re.escape(variable.path)] = decay ** (n - i)
    for layer in [*_backbones.embedding_parts(backbone), _backbones.embeddings_norm(backbone)]:
        for variable in layer.weights:
            factors[re.escape(variable.path)] = decay ** (n + 1)
    return factors
