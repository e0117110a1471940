"""vMF sampling throughput against tfp.distributions.VonMisesFisher.sample.

Run: python benchmarks/vmf.py [--samples 20000]
Prints one JSON object: samples per second of ours (inverse-CDF table and
Wood's sampler, each a tf.function call of the VonMisesFisher layer in
training mode on a batch of mean directions) and of TFP (one tf.function
sample call of the same size), and the ratios ours / TFP, for
d in {3, 16, 128, 768} and kappa in {10, 1000}, measured in the same run.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402
from _timing import best_time  # noqa: E402

from keras_space.layers import VonMisesFisher  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    n = args.samples
    rows = {}
    for d in (3, 16, 128, 768):
        mu = np.random.default_rng(0).normal(size=(1, d))
        mu /= np.linalg.norm(mu)
        batch = tf.constant(np.repeat(mu, n, 0).astype("float32"))
        for kappa in (10.0, 1000.0):
            timings = {}
            for sampler in ("table", "wood"):
                layer = VonMisesFisher(kappa, sampler=sampler, seed=0)
                layer.build(batch.shape)
                fn = tf.function(lambda x, layer=layer: layer(x, training=True))
                timings[sampler] = best_time(lambda fn=fn, batch=batch: fn(batch).numpy(), repeats=5)
            dist = tfp.distributions.VonMisesFisher(
                mean_direction=tf.constant(mu[0], tf.float32), concentration=tf.constant(kappa, tf.float32)
            )
            tfp_fn = tf.function(lambda dist=dist: dist.sample(n, seed=(1, 2)))
            timings["tfp"] = best_time(lambda tfp_fn=tfp_fn: tfp_fn().numpy(), repeats=5)
            rows[f"d={d},kappa={int(kappa)}"] = {
                "table_samples_per_s": round(n / timings["table"]),
                "wood_samples_per_s": round(n / timings["wood"]),
                "tfp_samples_per_s": round(n / timings["tfp"]),
                "table_speedup_vs_tfp": round(timings["tfp"] / timings["table"], 2),
                "wood_speedup_vs_tfp": round(timings["tfp"] / timings["wood"], 2),
            }
    print(json.dumps({"samples_per_call": n, "results": rows}))


if __name__ == "__main__":
    main()
