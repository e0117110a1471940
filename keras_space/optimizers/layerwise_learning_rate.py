"""Layer-wise learning rates: one optimizer per learning-rate multiplier.

`LayerwiseLearningRate(inner, multipliers)` keeps one copy of `inner` per
distinct factor, with the learning rate (float or schedule) multiplied by that
factor, and hands each copy the gradients of its group. That is exactly "a
separate optimizer per group": Adam's and AdamW's updates are invariant to
gradient scale, so scaling gradients would not do; AdamW's decoupled weight
decay (lr * wd * w) scales with the group's rate too.

The groups are resolved once, from the patterns over `variable.path`, when the
optimizer is first built, and kept in its config (`assignment`, one factor per
variable in build order): a reloaded model, whose variable paths may differ
(a Sequential model's lose the model's name), keeps exactly the groups and the
state it was saved with.
"""

import re
import warnings

import keras

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.optimizers._lean_state import (
    OwnVariablesOnly,
    checked_apply_arguments,
    unshare_buffers,
)
from keras_space.utils import validation

_Schedule = keras.optimizers.schedules.LearningRateSchedule


class _ScaledLearningRate(_Schedule):
    """factor * base(step) in `keras.config.floatx()` (base: a schedule)."""

    def __init__(self, base, factor):
        self.base = base
        self.factor = factor

    def __call__(self, step):
        rate = keras.ops.cast(self.base(step), keras.config.floatx())
        return rate * keras.ops.cast(self.factor, rate.dtype)

    def get_config(self):
        return {"base": keras.saving.serialize_keras_object(self.base), "factor": self.factor}


def _refuse_wrapper(inner_optimizer):
    """`inner_optimizer` must be a plain optimizer: the wrappers go outside this one."""
    from keras_space.optimizers.gradient_accumulator import GradientAccumulator

    wrappers = (LayerwiseLearningRate, GradientAccumulator, keras.optimizers.LossScaleOptimizer,
                keras.optimizers.MultiOptimizer)
    if not isinstance(inner_optimizer, keras.optimizers.Optimizer) or isinstance(
        inner_optimizer, wrappers
    ):
        raise ValueError(
            "`inner_optimizer` must be a plain keras.optimizers.Optimizer; wrappers go "
            "outside: GradientAccumulator(LossScaleOptimizer(LayerwiseLearningRate(opt, "
            f"multipliers)), steps). Received: inner_optimizer={inner_optimizer!r}"
        )
    if inner_optimizer.built:
        raise ValueError(
            "`inner_optimizer` must not be built yet: its copies start from its config. "
            f"Received: inner_optimizer={inner_optimizer.name} (built)"
        )


@keras_space_export("keras_space.optimizers.LayerwiseLearningRate")
class LayerwiseLearningRate(OwnVariablesOnly, keras.optimizers.Optimizer):
    """Per-variable-group learning-rate multipliers around any Keras optimizer.

    Each variable gets the factor of the first pattern in `multipliers` whose
    regular expression matches its whole `variable.path` (`re.fullmatch`), or
    `default`. Variables with the same factor share one copy of
    `inner_optimizer` whose learning rate (a number or a schedule) is multiplied
    by that factor: the result equals separate optimizers per group, for any
    optimizer (Adam and AdamW included, whose updates do not scale with the
    gradient). `layerwise_decay(backbone, decay)` gives the standard layer-wise
    decay of a keras-hub backbone.

    - The groups are resolved when the optimizer is built and stored in its
      config: a `.keras` reload keeps them and their state even where the
      variable paths change (a Sequential model's paths lose the model name).
      A pattern that matches no variable at that point is warned about.
    - `learning_rate` is the base rate. With a float base it can be set
      (`keras.callbacks.ReduceLROnPlateau`, `LearningRateScheduler`): each
      group then runs at factor × the new rate. Rates are kept in
      `keras.config.floatx()` (float64 models get float64 rates).
    - `group_optimizers` are the copies, {factor: optimizer}. `use_ema=True` on
      the inner optimizer works with `keras.callbacks.SwapEMAWeights`, also
      inside `GradientAccumulator` and `LossScaleOptimizer`.
    - Composes with `GradientAccumulator` and `LossScaleOptimizer`, both
      outside this one. `iterations` counts the updates.

    Args:
        inner_optimizer: an unbuilt plain `keras.optimizers.Optimizer` (its
            config is copied per group; `exclude_from_weight_decay` settings too).
        multipliers: dict {regex over `variable.path`: factor >= 0}.
        default: the factor of variables no pattern matches. Defaults to `1.0`.
        assignment: the resolved factors, one per variable in build order
            (written by `get_config`; leave it `None`).
        name: optional name.

    Example:

    ```python
    import keras
    import keras_hub
    from keras_space.optimizers import LayerwiseLearningRate, layerwise_decay

    backbone = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32)
    model = keras.Model(backbone.input, keras.layers.Dense(1)(backbone.output["pooled_output"]))
    optimizer = LayerwiseLearningRate(
        keras.optimizers.AdamW(2e-5, weight_decay=0.01),
        layerwise_decay(backbone, decay=0.9),  # embeddings 0.9**(L+1), layer i 0.9**(L-i)
    )
    model.compile(optimizer=optimizer, loss="mse")  # the head keeps the base rate
    ```
    """

    def __init__(
        self, inner_optimizer, multipliers, default=1.0, assignment=None, name=None, **kwargs
    ):
        if isinstance(inner_optimizer, dict):
            inner_optimizer = keras.optimizers.deserialize(inner_optimizer)
        _refuse_wrapper(inner_optimizer)
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
        factors = sorted({*checked.values(), default})
        if assignment is not None:
            if not isinstance(assignment, (list, tuple)):
                raise ValueError(
                    "`assignment` must be a list of factors, one per variable. "
                    f"Received: assignment={assignment!r}"
                )
            assignment = [validation.non_negative_float("assignment", f) for f in assignment]
            factors = sorted({*factors, *assignment})
        base = inner_optimizer._learning_rate
        if not isinstance(base, _Schedule):
            base = float(keras.ops.convert_to_numpy(base))
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self._base = base
        self.multipliers = checked
        self.default = default
        self.assignment = assignment
        self._inner_class = type(inner_optimizer)
        self._inner_config = inner_optimizer.get_config()
        self._exclusions = {
            attribute: getattr(inner_optimizer, attribute)
            for attribute in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern")
            if hasattr(inner_optimizer, attribute)
        }
        # made now, eagerly (Keras may build inside a graph); one per factor, in order
        self._factors = factors
        self._copies = [self._make_copy(factor) for factor in factors]

    def _make_copy(self, factor):
        config = dict(self._inner_config)
        config["name"] = f"{config['name']}_x{factor:g}"
        base = self._base
        if isinstance(base, _Schedule):
            config["learning_rate"] = base if factor == 1.0 else _ScaledLearningRate(base, factor)
        else:
            config["learning_rate"] = base * factor
        copy = self._inner_class.from_config(config)
        for attribute, value in self._exclusions.items():
            setattr(copy, attribute, value)
        return copy

    @property
    def group_optimizers(self):
        """{factor: the copy of the inner optimizer that updates that group}.

        (Not `optimizers`: Keras's learning-rate callbacks would then set each
        group's rate to the schedule's number instead of factor × it.)
        """
        return dict(zip(self._factors, self._copies, strict=True))

    def factor_for(self, variable):
        """The learning-rate multiplier of `variable` (its group's, once built)."""
        if self.built:
            return self._factor_of[self._var_key(variable)]
        return self._match(variable.path)

    def _match(self, path):
        for pattern, factor in self.multipliers.items():
            if re.fullmatch(pattern, path):
                return factor
        return self.default

    def build(self, var_list):
        if self.built:
            return
        var_list = list(var_list)
        if self.assignment is None:
            factors = [self._match(v.path) for v in var_list]
            unused = [p for p in self.multipliers
                      if not any(re.fullmatch(p, v.path) for v in var_list)]
            if unused:
                warnings.warn(
                    f"LayerwiseLearningRate: the patterns {unused} match no variable, so they "
                    "change nothing (patterns must match the whole `variable.path`, e.g. "
                    f"{[v.path for v in var_list[:3]]}).",
                    stacklevel=2,
                )
        elif len(self.assignment) != len(var_list):
            raise ValueError(
                f"`assignment` has {len(self.assignment)} factors but the optimizer is built "
                f"for {len(var_list)} variables: it belongs to another model. Build a new "
                "LayerwiseLearningRate from the patterns instead. "
                f"Received: assignment={self.assignment}"
            )
        else:
            factors = list(self.assignment)
        self.assignment = factors
        self._factor_of = {self._var_key(v): f for v, f in zip(var_list, factors, strict=True)}
        for factor, copy in zip(self._factors, self._copies, strict=True):
            copy.build([v for v, f in zip(var_list, factors, strict=True) if f == factor])
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + [v for copy in self._copies for v in copy.variables]

    def apply(self, grads, trainable_variables=None):
        grads, trainable_variables = checked_apply_arguments(self, grads, trainable_variables)
        for factor, copy in zip(self._factors, self._copies, strict=True):
            pairs = [(g, v) for g, v in zip(grads, trainable_variables, strict=True)
                     if self._factor_of[self._var_key(v)] == factor]
            if pairs:
                copy.apply([g for g, _ in pairs], [v for _, v in pairs])
        self._iterations.assign_add(1)

    def finalize_variable_values(self, var_list):
        for copy in self._copies:
            if copy._trainable_variables:
                copy.finalize_variable_values(copy._trainable_variables)
        unshare_buffers(var_list)

    @property
    def _model_variables_moving_average(self):
        # for keras.callbacks.SwapEMAWeights (see _lean_state): the groups' averages
        # in this optimizer's variable order; AttributeError without use_ema
        table = {}
        for copy in self._copies:
            table.update(zip(map(id, copy._trainable_variables),
                             copy._model_variables_moving_average, strict=True))
        return [table[id(v)] for v in self._trainable_variables]

    @property
    def learning_rate(self):
        """The base rate (the rate of a factor-1 group)."""
        if not hasattr(self, "_copies"):  # inside Optimizer.__init__
            return self._get_current_learning_rate()
        if isinstance(self._base, _Schedule):
            return self._base(self._iterations)
        # the groups' rates are the state (callbacks and checkpoints set them)
        factor = 1.0 if 1.0 in self._factors else self._factors[-1]
        if factor == 0.0:
            return keras.ops.convert_to_tensor(self._base, keras.config.floatx())
        rate = self._copies[self._factors.index(factor)].learning_rate
        return rate if factor == 1.0 else rate / factor

    @learning_rate.setter
    def learning_rate(self, value):
        if not hasattr(self, "_copies"):  # Optimizer.__init__ sets its (unused) own rate
            keras.optimizers.Optimizer.learning_rate.fset(self, value)
            return
        if isinstance(self._base, _Schedule):
            raise TypeError(
                "This LayerwiseLearningRate's inner optimizer was created with a "
                "LearningRateSchedule, so its rate is not settable (change the schedule). "
                f"Received: learning_rate={value!r}"
            )
        rate = float(keras.ops.convert_to_numpy(value))
        for factor, copy in zip(self._factors, self._copies, strict=True):
            copy.learning_rate = rate * factor

    def get_config(self):
        inner = self._inner_class.from_config(self._inner_config)
        return {
            "inner_optimizer": keras.optimizers.serialize(inner),
            "multipliers": dict(self.multipliers),
            "default": self.default,
            "assignment": None if self.assignment is None else list(self.assignment),
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
    import keras
    import keras_hub
    from keras_space.optimizers import LayerwiseLearningRate, layerwise_decay

    backbone = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32)
    multipliers = layerwise_decay(backbone, decay=0.9)
    optimizer = LayerwiseLearningRate(keras.optimizers.AdamW(2e-5), multipliers)
    ```
    """
    decay = validation.positive_float("decay", decay, maximum=1.0)
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            "`backbone` must be a built keras-hub backbone (a keras.Model such as "
            f"BertBackbone). Received: backbone={backbone!r}"
        )
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
