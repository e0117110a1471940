"""A short tour of keras_space on sklearn's digits (finishes in well under 3 minutes on 2 CPU cores).

Run: python examples/quickstart.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space.layers import SmoothLeakyReLU, SmoothReLU  # noqa: E402


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def main():
    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = load_data()
    # Smooth activations: ReLU convolved with a Gaussian (trainable width), and
    # SAU (leaky ReLU smoothed, trainable slope).
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128),
            SmoothReLU(sigma=0.5, trainable_sigma=True),
            keras.layers.Dense(64),
            SmoothLeakyReLU(alpha=0.05, sigma=0.5),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"digits MLP test accuracy: {acc:.3f}")
    assert np.isfinite(acc)


if __name__ == "__main__":
    main()
