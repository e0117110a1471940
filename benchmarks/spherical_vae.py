"""Spherical VAEs against each other and a Gaussian VAE, on sklearn's digits.

Run: python benchmarks/spherical_vae.py [--epochs 40] [--seeds 0,1,2]
Prints one JSON object. The models of `examples/vmf_vae.py` (same encoder and
decoder, latent dim 5, Adam 1e-3, batch 64, 40 epochs: its settings, not tuned
here): "vmf" (one learned kappa), "vmf_per_example" (kappa from the encoder),
"power_spherical", "power_spherical_per_example", "gaussian". Per model and
seed, on the held-out 20 % of the digits:

- elbo: -(E_q[-log p(x | z)] + KL), nats per example, averaged over 20
  stochastic passes (higher is better);
- knn_accuracy: 1-nearest-neighbour digit accuracy of the test latents (the
  mean direction / the mean) against the training latents;
- step_ms: median `train_on_batch` time of a batch of 64 (30 calls), and the ratio
  to the Gaussian VAE's in the same run.

Reported as mean and standard deviation over the seeds.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from keras_space.utils import set_deterministic  # noqa: E402


def run(kind, seed, epochs, data):
    import keras
    from vmf_vae import bernoulli_loss, build

    x_train, x_test, y_train, y_test = data
    set_deterministic(seed)
    model, _ = build(5, kind, seed=seed)
    model.fit(x_train, x_train, batch_size=64, epochs=epochs, verbose=0)
    passes = []
    for _ in range(20):
        logits = model(x_test, training=True)
        kl = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
        passes.append(float(np.mean(keras.ops.convert_to_numpy(bernoulli_loss(x_test, logits)))) + kl)
    encoder = keras.Model(model.input, model.get_layer("latent").output)
    z_train = encoder.predict(x_train, verbose=0)
    z_test = encoder.predict(x_test, verbose=0)
    nearest = np.argmin(((z_test[:, None, :] - z_train[None, :, :]) ** 2).sum(-1), axis=1)
    batch = x_train[:64]
    step = best_time(lambda: model.train_on_batch(batch, batch), repeats=30, warmup=3)
    return {"elbo": -float(np.mean(passes)),
            "knn_accuracy": float(np.mean(y_train[nearest] == y_test)),
            "step_ms": step * 1e3}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from vmf_vae import KINDS

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    data = train_test_split(x, digits.target, test_size=0.2, random_state=0)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {kind: [run(kind, seed, args.epochs, data) for seed in seeds] for kind in KINDS}
    out = {}
    for kind, rows in runs.items():
        out[kind] = {}
        for metric in ("elbo", "knn_accuracy", "step_ms"):
            values = np.array([r[metric] for r in rows])
            out[kind][metric] = [round(float(values.mean()), 4), round(float(values.std()), 4)]
        gaussian = np.array([r["step_ms"] for r in runs["gaussian"]])
        out[kind]["step_over_gaussian"] = round(float(np.mean(
            np.array([r["step_ms"] for r in rows]) / gaussian)), 2)
    print(json.dumps({"epochs": args.epochs, "seeds": seeds, "results": out}))


if __name__ == "__main__":
    main()
