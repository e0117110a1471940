"""The models and optimizer nestings of the resume tests (imported by the test and
by the fresh process that reloads the saved files; run as a script it is that
process: `python _resume_case.py DIR` continues every saved run in DIR)."""

import json
import os
import sys

import keras
import numpy as np

from keras_space.optimizers import GradientAccumulator, LayerwiseLearningRate
from keras_space.optimizers.schedules import warmup_linear_decay

BATCH = 4
X = np.random.default_rng(0).normal(size=(48, 4))
Y = np.sin(X @ np.array([[1.0], [-2.0], [0.5], [1.5]]))


@keras.saving.register_keras_serializable(package="resume_case")
class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = keras.layers.Dense(5, activation="tanh", name="body")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        return self.head(self.body(x))


def float64():
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")


def model(kind):
    """A float64 two-layer model whose first layer is named "body"."""
    float64()
    keras.utils.set_random_seed(7)
    body = keras.layers.Dense(5, activation="tanh", name="body")
    head = keras.layers.Dense(1, name="head")
    if kind == "sequential":
        built = keras.Sequential([keras.Input((4,)), body, head])
    elif kind == "functional":
        x = keras.Input((4,))
        built = keras.Model(x, head(body(x)))
    else:
        built = Subclassed()
        built(X[:1])
    return built


def optimizer(nesting, kind):
    """`nesting`: "llr", "ga(llr)" or "ga(lso(llr))"; EMA on, a warm-up schedule."""
    # A Sequential model's paths start with its name, which the reload drops.
    pattern = ".*/body/.*" if kind == "sequential" else "(.*/)?body/.*"
    inner = keras.optimizers.AdamW(warmup_linear_decay(0.05, 2, 12), weight_decay=0.1,
                                   use_ema=True, ema_momentum=0.5)
    llr = LayerwiseLearningRate(inner, {pattern: 0.1})
    if nesting == "llr":
        return llr
    if nesting == "ga(llr)":
        return GradientAccumulator(llr, steps=4)
    return GradientAccumulator(keras.optimizers.LossScaleOptimizer(llr), steps=4)


CASES = [(n, k) for n in ("llr", "ga(llr)", "ga(lso(llr))")
         for k in ("sequential", "functional", "subclassed")]


def continue_saved(folder):
    """Fresh process: load each saved run, fit the second half, return the weights."""
    float64()
    out = {}
    for nesting, kind in CASES:
        name = f"{nesting}-{kind}"
        loaded = keras.saving.load_model(os.path.join(folder, name + ".keras"))
        loaded.fit(X[24:], Y[24:], batch_size=BATCH, shuffle=False, verbose=0)
        out[name] = [v.numpy().tolist() for v in loaded.trainable_variables]
        out[name + ":iterations"] = int(loaded.optimizer.iterations)
    return out


if __name__ == "__main__":
    with open(os.path.join(sys.argv[1], "continued.json"), "w") as f:
        json.dump(continue_saved(sys.argv[1]), f)
