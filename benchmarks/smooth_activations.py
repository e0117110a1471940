"""Forward+backward throughput of the smooth activations against Keras's gelu and relu.

Run: python benchmarks/smooth_activations.py
Prints one JSON object. Ratios are time(ours) / time(peer), measured in the same run.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _timing import best_time  # noqa: E402

from keras_space import activations as A  # noqa: E402


def fwd_bwd(fn, x):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y)
        # return the value too: otherwise grappler prunes a forward pass whose
        # backward does not read it (ours recomputes from x), timing only the backward
        return loss, tape.gradient(loss, x)

    return lambda: [t.numpy() for t in step()]


def main():
    x = tf.constant(np.random.default_rng(0).normal(size=(4096, 1024)).astype("float32"))
    fns = {
        "keras_relu": keras.activations.relu,
        "keras_gelu": lambda v: keras.activations.gelu(v, approximate=False),
        "smooth_relu_gaussian": lambda v: A.smooth_relu(v, 0.5),
        "smooth_relu_logistic": lambda v: A.smooth_relu(v, 0.5, "logistic"),
        "smooth_leaky_relu": lambda v: A.smooth_leaky_relu(v, 0.01, 0.5),
        "smooth_abs": lambda v: A.smooth_abs(v, 0.5),
        "smooth_sign": lambda v: A.smooth_sign(v, 0.5),
        "smooth_floor": lambda v: A.smooth_floor(v, 0.2),
    }
    times = {name: best_time(fwd_bwd(fn, x)) for name, fn in fns.items()}
    result = {
        "shape": [4096, 1024],
        "dtype": "float32",
        "ms": {k: round(v * 1e3, 2) for k, v in times.items()},
        "ratio_vs_keras_gelu": {
            k: round(v / times["keras_gelu"], 2) for k, v in times.items() if k.startswith("smooth")
        },
        "ratio_vs_keras_relu": {
            k: round(v / times["keras_relu"], 2) for k, v in times.items() if k.startswith("smooth")
        },
    }
    # mollify: cost against the number of quadrature points, on a (256, 256) tensor,
    # as a ratio to the closed form smooth_relu on the same tensor.
    small = tf.constant(np.random.default_rng(1).normal(size=(256, 256)).astype("float32"))
    base = best_time(fwd_bwd(lambda v: A.smooth_relu(v, 0.5), small))
    mollify = {}
    for n in (16, 64, 256, 1024):
        t = best_time(fwd_bwd(lambda v, n=n: A.mollify(keras.ops.relu, v, 0.5, num_points=n), small), repeats=3)
        mollify[str(n)] = round(t / base, 1)
    result["mollify_relu_ratio_vs_closed_form_by_points_256x256"] = mollify
    print(json.dumps(result))


if __name__ == "__main__":
    main()
