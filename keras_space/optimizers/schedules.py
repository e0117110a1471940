"""Learning-rate schedules for fine-tuning (bert4keras's `piecewise_linear`).

`PiecewiseLinear(learning_rate, points)` multiplies a base rate by a function of
the optimizer's step that is linear between the given points and constant after
the last; `warmup_linear_decay` builds the standard BERT recipe from it. Both are
registered Keras objects: a compiled model reloads them without
`custom_objects`. Under `GradientAccumulator` the step is the number of real
updates (the inner optimizer's `iterations`), as in the large-batch run.
"""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


@keras_space_export("keras_space.optimizers.schedules.PiecewiseLinear")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` times a piecewise-linear multiplier of the step.

    `points` maps steps to multipliers; between two points the multiplier is
    interpolated linearly, after the last it stays constant. As in bert4keras's
    `piecewise_linear`, the multiplier starts at 0 at step 0 unless `points`
    gives step 0, so `{1000: 1.0, 2000: 0.1}` warms up linearly over 1,000 steps
    and decays to a tenth by step 2,000.

    Args:
        learning_rate: the base rate (positive, finite).
        points: a dict {step: multiplier} (steps non-negative integers,
            multipliers finite and non-negative), at least one entry.
        name: optional name. Defaults to `"PiecewiseLinear"`.

    Example:

    >>> import keras
    >>> from keras_space.optimizers.schedules import PiecewiseLinear
    >>> schedule = PiecewiseLinear(2e-5, {100: 1.0, 1000: 0.0})
    >>> optimizer = keras.optimizers.AdamW(schedule)
    >>> float(schedule(50))  # half-way through the warm-up
    1e-05
    """

    def __init__(self, learning_rate, points, name="PiecewiseLinear"):
        super().__init__()
        self.learning_rate = validation.positive_float("learning_rate", learning_rate)
        if not isinstance(points, dict) or not points:
            raise ValueError(
                "`points` must be a non-empty dict {step: multiplier}. "
                f"Received: points={points!r}"
            )
        parsed = {}
        for step, multiplier in points.items():
            step = validation.non_negative_int("points", step)  # a step
            parsed[step] = validation.non_negative_float("points", multiplier)  # a multiplier
        if 0 not in parsed:
            parsed[0] = 0.0
        self.points = dict(sorted(parsed.items()))
        self.name = name

    def multiplier(self, step):
        """The multiplier at `step`, a float64 tensor.

        Float64 holds every step up to 2**53 exactly (float32 stops at 2**24);
        a negative step reads as step 0.
        """
        steps = list(self.points)
        values = list(self.points.values())
        step = ops.maximum(ops.cast(step, "float64"), 0.0)
        out = ops.convert_to_tensor(values[-1], "float64")  # constant after the last point
        for i in range(len(steps) - 1, 0, -1):  # innermost: the first segment
            s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
            t = (step - s0) / float(s1 - s0)
            out = ops.where(step < s1, v0 + (v1 - v0) * t, out)
        return out

    def __call__(self, step):
        """The rate at `step` in `keras.config.floatx()` (computed in float64)."""
        return ops.cast(self.learning_rate * self.multiplier(step), keras.config.floatx())

    def get_config(self):
        # JSON object keys are strings: steps are written as strings, read back as ints.
        return {
            "learning_rate": self.learning_rate,
            "points": {str(k): v for k, v in self.points.items()},
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["points"] = {int(k): v for k, v in config["points"].items()}
        return cls(**config)


@keras_space_export("keras_space.optimizers.schedules.warmup_linear_decay", serializable=False)
def warmup_linear_decay(learning_rate, warmup_steps, total_steps, end_multiplier=0.0):
    """The BERT fine-tuning schedule: linear warm-up from 0, then linear decay.

    The rate rises from 0 to `learning_rate` over `warmup_steps` updates, then
    falls linearly to `end_multiplier * learning_rate` at `total_steps` and stays
    there. A common choice is `warmup_steps` = 10 % of `total_steps`.

    Args:
        learning_rate: the peak rate.
        warmup_steps: updates of warm-up (0: start at the peak).
        total_steps: the update at which the decay ends (> `warmup_steps`).
        end_multiplier: the final fraction of the peak. Defaults to `0.0`.

    Returns:
        A `PiecewiseLinear` schedule.

    Example:

    >>> from keras_space.optimizers.schedules import warmup_linear_decay
    >>> schedule = warmup_linear_decay(2e-5, warmup_steps=100, total_steps=1000)
    >>> round(float(schedule(550)), 12)
    1e-05
    """
    warmup_steps = validation.non_negative_int("warmup_steps", warmup_steps)
    total_steps = validation.positive_int("total_steps", total_steps)
    end_multiplier = validation.non_negative_float("end_multiplier", end_multiplier)
    if total_steps <= warmup_steps:
        raise ValueError(
            "`total_steps` must be greater than `warmup_steps`. Received: "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}"
        )
    return PiecewiseLinear(learning_rate, {warmup_steps: 1.0, total_steps: end_multiplier})
