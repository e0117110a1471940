"""A short tour of keras_space on sklearn's digits (finishes in well under 3 minutes on 2 CPU cores).

Run: python examples/quickstart.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space.layers import (  # noqa: E402
    GMLPBlock,
    RandomProjection,
    SimHash,
    SmoothLeakyReLU,
    SmoothReLU,
    WhiteningLayer,
)
from keras_space.ops import hamming_similarity, jl_epsilon  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


def nearest_neighbour_accuracy(train_vectors, y_train, test_vectors, y_test):
    a = train_vectors / np.linalg.norm(train_vectors, axis=1, keepdims=True)
    b = test_vectors / np.linalg.norm(test_vectors, axis=1, keepdims=True)
    return float(np.mean(y_train[np.argmax(b @ a.T, axis=1)] == y_test))


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def main():
    set_deterministic(0)
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

    # Features of the penultimate layer, whitened (statistics from the training
    # set) and compressed: cosine 1-nearest-neighbour accuracy on the test set.
    features = keras.Model(model.inputs, model.layers[-2].output)
    f_train = features.predict(x_train, verbose=0)
    f_test = features.predict(x_test, verbose=0)
    whitening = WhiteningLayer(n_components=16)
    whitening.adapt(f_train)
    w_train, w_test = np.asarray(whitening(f_train)), np.asarray(whitening(f_test))
    print(f"1-NN on the 64-d features:         {nearest_neighbour_accuracy(f_train, y_train, f_test, y_test):.3f}")
    print(f"1-NN on 16 whitened components:    {nearest_neighbour_accuracy(w_train, y_train, w_test, y_test):.3f}")

    # Johnson-Lindenstrauss: a random projection of the raw pixels, and 256-bit
    # SimHash codes searched by Hamming similarity.
    projection = RandomProjection(32, seed=0)
    p_train, p_test = np.asarray(projection(x_train)), np.asarray(projection(x_test))
    print(
        f"1-NN on 32 random projections:    {nearest_neighbour_accuracy(p_train, y_train, p_test, y_test):.3f}"
        f"  (JL guarantees eps={jl_epsilon(len(x_train), 32):.2f} for this many points)"
    )
    hasher = SimHash(256, seed=0)
    codes_train = np.asarray(hasher(x_train))[:, 0]
    codes_test = np.asarray(hasher(x_test))[:, 0]
    sim = np.asarray(hamming_similarity(codes_test, codes_train, pairwise=True))
    print(f"1-NN by 256-bit SimHash codes:     {np.mean(y_train[np.argmax(sim, axis=1)] == y_test):.3f}")

    # An attention-free token mixer: each digit as 16 tokens (its 2x2 patches),
    # one gMLP block, mean pooling. (examples/token_mixers.py compares them all.)
    def tokens(flat):
        return flat.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 16, 4)

    set_deterministic(0)
    mixer = keras.Sequential([
        keras.Input((16, 4)),
        keras.layers.Dense(32),
        GMLPBlock(ffn_dim=64),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(10),
    ])
    mixer.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    mixer.fit(tokens(x_train), y_train, epochs=20, batch_size=64, verbose=0)
    print(f"gMLP token mixer test accuracy:    {mixer.evaluate(tokens(x_test), y_test, verbose=0)[1]:.3f}")


if __name__ == "__main__":
    main()
