"""Attention-free token mixers vs attention on sklearn's digits, as 16 patches of 2x2 pixels.

Run: python examples/token_mixers.py [--epochs 30] [--blocks 2]

Each 8x8 digit becomes a sequence of 16 tokens (its 2x2 patches, 4 pixels
each), embedded to 32 channels with a learned position embedding; a stack of
`--blocks` blocks of one kind, mean pooling and a Dense(10) classify it. The
attention baseline is a pre-norm block x + MHA(LN(x)) followed by a channel
MLP (the Transformer encoder); every mixer block is used as it comes. Prints
held-out accuracy, parameter count and training time per model.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space.layers import (  # noqa: E402
    ExternalAttention,
    FNetBlock,
    GMLPBlock,
    MLPMixerBlock,
    ResMLPBlock,
    SynthesizerAttention,
)
from keras_space.utils import set_deterministic  # noqa: E402

WIDTH = 32


def patches(images):
    """(n, 8, 8) -> (n, 16, 4): the 2x2 patches in raster order."""
    x = images.reshape(-1, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4)
    return x.reshape(-1, 16, 4).astype("float32") / 16.0


class PositionEmbedding(keras.layers.Layer):
    def build(self, input_shape):
        self.table = self.add_weight(shape=tuple(input_shape[1:]), initializer="random_normal")

    def call(self, x):
        return x + self.table


def attention_block():
    def block(x):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(4, WIDTH // 4)(h, h)
        h = keras.layers.Dense(2 * WIDTH, activation="gelu")(keras.layers.LayerNormalization()(x))
        return x + keras.layers.Dense(WIDTH)(h)

    return block


MIXERS = {
    "MultiHeadAttention (baseline)": attention_block,
    "MLPMixerBlock": lambda: MLPMixerBlock(tokens_mlp_dim=32, channels_mlp_dim=2 * WIDTH),
    "GMLPBlock": lambda: GMLPBlock(ffn_dim=2 * WIDTH),
    "GMLPBlock + tiny attention (aMLP)": lambda: GMLPBlock(ffn_dim=2 * WIDTH, tiny_attention_dim=16),
    "FNetBlock": lambda: FNetBlock(ffn_dim=2 * WIDTH),
    "ResMLPBlock": lambda: ResMLPBlock(channels_mlp_dim=2 * WIDTH),
    "ExternalAttention": lambda: ExternalAttention(memory_units=32),
    "SynthesizerAttention (random)": lambda: SynthesizerAttention(num_heads=4, mode="random"),
    "SynthesizerAttention (dense)": lambda: SynthesizerAttention(num_heads=4, mode="dense"),
}


def build(make_block, blocks):
    inputs = keras.Input((16, 4))
    x = PositionEmbedding()(keras.layers.Dense(WIDTH)(inputs))
    for _ in range(blocks):
        x = make_block()(x)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=2)
    args = parser.parse_args()
    set_deterministic(0)  # before TensorFlow starts

    digits = load_digits()
    x = patches(digits.images)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    print("| block | held-out accuracy | parameters | training time |")
    print("|---|---|---|---|")
    for name, make in MIXERS.items():
        set_deterministic(0)
        model = build(make, args.blocks)
        model.compile(
            keras.optimizers.AdamW(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - start
        acc = model.evaluate(x_test, y_test, verbose=0)[1]
        print(f"| {name} | {acc:.3f} | {model.count_params():,} | {seconds:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
