"""Smooth activations: plots of each function at several widths, and a digits MLP
trained with ReLU, SmoothReLU and SAU (SmoothLeakyReLU with trainable alpha).

Run: python examples/smooth_activations.py [--out smooth_activations.png] [--epochs 30]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space import activations as A  # noqa: E402
from keras_space.layers import SmoothLeakyReLU, SmoothReLU  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


def plot(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.linspace(-3, 3, 601)
    panels = [
        ("relu", np.maximum(x, 0), A.smooth_relu, {}),
        ("leaky relu (SAU, alpha=0.2)", np.maximum(x, 0.2 * x), A.smooth_leaky_relu, {"alpha": 0.2}),
        ("abs", np.abs(x), A.smooth_abs, {}),
        ("sign", np.sign(x), A.smooth_sign, {}),
        ("step", (x > 0) * 1.0, A.smooth_step, {}),
        ("floor", np.floor(x), A.smooth_floor, {}),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, exact, fn, kw) in zip(axes.flat, panels, strict=True):
        ax.plot(x, exact, "k", lw=2.5, alpha=0.35, label="f")
        for sigma in (0.05, 0.2, 0.5, 1.0):
            ax.plot(x, np.asarray(fn(x, sigma=sigma, **kw)), lw=1.2, label=f"gaussian sigma={sigma}")
        ax.plot(x, np.asarray(fn(x, sigma=0.2, kernel="logistic", **kw)), "--", lw=1.2, label="logistic sigma=0.2")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("f convolved with an approximate identity phi_sigma")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def digits():
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    return train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)


def mlp(activation):
    layers = [keras.Input((64,))]
    for _ in range(2):
        layers.append(keras.layers.Dense(64))
        layers.append(activation())
    layers.append(keras.layers.Dense(10))
    return keras.Sequential(layers)


def train(name, activation, data, epochs, seeds=(0, 1, 2)):
    x_tr, x_te, y_tr, y_te = data
    accs, start = [], time.perf_counter()
    for seed in seeds:
        set_deterministic(seed)
        model = mlp(activation)
        model.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, verbose=0)
        accs.append(model.evaluate(x_te, y_te, verbose=0)[1])
    secs = (time.perf_counter() - start) / len(seeds)
    print(f"{name:<34} test accuracy {np.mean(accs):.4f} +- {np.std(accs):.4f}   ({secs:.1f} s/run)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="smooth_activations.png")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    set_deterministic(0)  # before TensorFlow starts
    plot(args.out)
    data = digits()
    train("ReLU", keras.layers.ReLU, data, args.epochs)
    train("SmoothReLU(sigma=0.5)", lambda: SmoothReLU(sigma=0.5), data, args.epochs)
    train(
        "SmoothReLU(trainable sigma)",
        lambda: SmoothReLU(sigma=0.5, trainable_sigma=True),
        data,
        args.epochs,
    )
    train("SAU: SmoothLeakyReLU(alpha, sigma)", lambda: SmoothLeakyReLU(alpha=0.01, sigma=0.5), data, args.epochs)


if __name__ == "__main__":
    main()
