"""Spherical VAEs (vMF, Power Spherical) and a Gaussian VAE on sklearn's digits.

Run: python examples/vmf_vae.py [--latent-dim 5] [--epochs 40] [--out vmf_vae.png]
         [--kinds vmf,vmf_per_example,gaussian]

Every model has the same encoder and decoder (MLPs, 8x8 digits as 64
Bernoulli pixels). The spherical latents have a uniform prior on the sphere:
"vmf" is `VonMisesFisher(learn_kappa=True)` (one learned kappa), "vmf_per_example"
`VonMisesFisher(kappa=None)` with kappa = softplus + 1 predicted by the encoder per
example (as in the hyperspherical VAE paper), "power_spherical" and
"power_spherical_per_example" the same with `PowerSpherical`; "gaussian" is the usual
N(mu, sigma^2) with a N(0, I) prior. Each epoch prints the reconstruction loss and
the KL term (per example, in nats); the PNG shows digits decoded from points drawn
uniformly on the sphere (the first spherical kind) and from N(0, I) (Gaussian).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_space.layers import PowerSpherical, VonMisesFisher  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


class GaussianLatent(keras.layers.Layer):
    """z = mu + sigma * eps from [mu, log_var]; KL to N(0, I) via add_loss."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_metric = keras.metrics.Mean(name="kl")

    def call(self, inputs, training=None):
        mu, log_var = keras.ops.split(inputs, 2, axis=-1)
        kl = -0.5 * keras.ops.sum(1 + log_var - keras.ops.square(mu) - keras.ops.exp(log_var), axis=-1)
        if training:
            self.add_loss(keras.ops.mean(kl))
            self.kl_metric.update_state(kl)
            eps = keras.random.normal(keras.ops.shape(mu), seed=self.seed_generator)
            return mu + keras.ops.exp(0.5 * log_var) * eps
        return mu


def bernoulli_loss(y, logits):
    return keras.ops.sum(
        keras.ops.binary_crossentropy(y, logits, from_logits=True), axis=-1
    )


KINDS = ("vmf", "vmf_per_example", "power_spherical", "power_spherical_per_example", "gaussian")


def build(latent_dim, kind, seed):
    inputs = keras.Input((64,))
    h = keras.layers.Dense(256, activation="relu")(inputs)
    h = keras.layers.Dense(128, activation="relu")(h)
    if kind == "gaussian":
        z = GaussianLatent(seed=seed, name="latent")(keras.layers.Dense(2 * latent_dim)(h))
    else:
        latent = VonMisesFisher if kind.startswith("vmf") else PowerSpherical
        mu = keras.layers.Dense(latent_dim)(h)
        if kind.endswith("per_example"):  # kappa from the encoder, > 1
            kappa = keras.layers.Dense(1, activation="softplus")(h) + 1.0
            z = latent(kappa=None, seed=seed, name="latent")([mu, kappa])
        else:
            z = latent(kappa=10.0, learn_kappa=True, seed=seed, name="latent")(mu)
    decoder = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(64),
        ],
        name="decoder",
    )
    model = keras.Model(inputs, decoder(z))
    model.compile(keras.optimizers.Adam(1e-3), loss=bernoulli_loss)
    return model, decoder


def kappa_summary(model, kind, x):
    """The learned kappa, or the median and range of the predicted ones."""
    layer = model.get_layer("latent")
    if not kind.endswith("per_example"):
        return f"kappa {float(np.exp(keras.ops.convert_to_numpy(layer.log_kappa))):.1f}"
    kappas = keras.Model(model.input, layer.input[1]).predict(x, verbose=0)[:, 0]
    return f"kappa median {np.median(kappas):.1f} ({kappas.min():.1f}-{kappas.max():.1f})"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--latent-dim", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="vmf_vae.png")
    parser.add_argument("--kinds", default="vmf,vmf_per_example,gaussian")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"--kinds: each of {KINDS}. Received: {kind!r}")
    set_deterministic(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    x_train, x_test = train_test_split(x, test_size=0.2, random_state=0)

    decoders = {}
    for kind in kinds:
        set_deterministic(0)
        model, decoder = build(args.latent_dim, kind, seed=0)
        print(f"--- {kind} VAE, latent dim {args.latent_dim}")
        print("epoch  reconstruction   KL     (nats per example)")
        for epoch in range(args.epochs):
            logs = model.fit(x_train, x_train, batch_size=64, epochs=1, verbose=0).history
            kl = logs["kl"][-1]
            recon = logs["loss"][-1] - kl
            if epoch % 5 == 4 or epoch == 0:
                extra = "" if kind == "gaussian" else "   " + kappa_summary(model, kind, x_train)
                print(f"{epoch + 1:5d}  {recon:14.2f}  {kl:6.2f}{extra}")
        test_recon = float(keras.ops.mean(bernoulli_loss(x_test, model(x_test, training=False))))
        print(f"test reconstruction (mean direction / mean, no sampling): {test_recon:.2f}")
        decoders[kind] = decoder

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    points = rng.normal(size=(100, args.latent_dim)).astype("float32")
    on_sphere = points / np.linalg.norm(points, axis=1, keepdims=True)
    panels = [(f"{kind} VAE: " + ("points from N(0, I)" if kind == "gaussian"
                                   else "uniform points on the sphere"),
               decoders[kind], points if kind == "gaussian" else on_sphere) for kind in kinds]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (title, decoder, z) in zip(axes[0], panels, strict=True):
        images = keras.ops.convert_to_numpy(keras.ops.sigmoid(decoder.predict(z, verbose=0)))
        tiles = np.pad(images.reshape(100, 8, 8), ((0, 0), (1, 1), (1, 1)))
        grid = tiles.reshape(10, 10, 10, 10).transpose(0, 2, 1, 3).reshape(100, 100)
        ax.imshow(grid, cmap="gray_r")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
