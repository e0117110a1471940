"""Gradient accumulation: batch 1 x 32 micro-steps trains like batch 32.

Run: python examples/gradient_accumulation.py [--epochs 15]

A digits MLP is trained three times with the same optimizer settings (SGD,
learning rate 0.1, momentum 0.9, tuned for batch 32) and the same number of
epochs: batch 32; batch 1 with GradientAccumulator(steps=32); plain batch 1.
The first two make the same updates (up to float32 rounding) and reach the
same accuracy; plain batch 1 makes 32 times more, noisier updates with a
step size meant for batch 32.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space.optimizers import GradientAccumulator  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


def mlp():
    set_deterministic(0)
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    set_deterministic(0)  # before TensorFlow starts
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)
    n = (len(x_tr) // 32) * 32  # whole windows only, so every run sees the same data
    x_tr, y_tr = x_tr[:n], y_tr[:n]

    def sgd():
        return keras.optimizers.SGD(0.1, momentum=0.9)

    runs = [
        ("batch 32", sgd(), 32),
        ("batch 1 x GradientAccumulator(32)", GradientAccumulator(sgd(), steps=32), 1),
        ("plain batch 1", sgd(), 1),
    ]
    weights = {}
    print(f"{'run':<36} test accuracy   updates   time")
    for name, optimizer, batch in runs:
        model = mlp()
        model.compile(
            optimizer,
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        model.fit(x_tr, y_tr, batch_size=batch, epochs=args.epochs, shuffle=False, verbose=0)
        seconds = time.perf_counter() - start
        acc = model.evaluate(x_te, y_te, verbose=0)[1]
        updates = int(optimizer.iterations.numpy())
        print(f"{name:<36} {acc:13.4f} {updates:9d} {seconds:6.1f} s")
        weights[name] = np.concatenate([w.ravel() for w in model.get_weights()])
    a, b = weights["batch 32"], weights["batch 1 x GradientAccumulator(32)"]
    print(f"relative weight difference, batch 32 vs accumulated: {np.linalg.norm(a - b) / np.linalg.norm(a):.2e}")


if __name__ == "__main__":
    main()
