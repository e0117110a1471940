"""vMF sampling throughput against TensorFlow Probability and the noise floor.

Run: python benchmarks/vmf.py [--samples 20000]
Prints one JSON object. For d in {3, 16, 128, 768} and kappa in {10, 1000},
20,000 samples, each a `tf.function` call taking a batch of 20,000 different
unit mean directions as its argument (median of 7):

- ours: `VonMisesFisher.sample(mu)` (w from the sampler, the sphere part in
  float32) with the default sampler ("closed_form" at d = 3, else "table")
  and with "wood"; and the whole layer in training mode (normalising the
  input, KL, sample);
- noise: `keras.random.normal` of the same (20,000, d) shape, the floor;
- TFP batched: `tfp.distributions.VonMisesFisher(mean_direction=mu,
  concentration=kappa).sample()`, the like-for-like peer;
- TFP one direction: `VonMisesFisher(mu[0], kappa).sample(20000)` (labelled;
  cheaper for TFP, which then rotates around a single direction).

Ratios: sample / noise, and TFP time / ours (speed-up), measured in the same run.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

from _timing import sphere_sampling_grid, traced_sampler_ms  # noqa: E402


def measure(d, kappa, mu, n):
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    from keras_space.layers import VonMisesFisher

    default = VonMisesFisher(kappa, seed=0)
    wood = VonMisesFisher(kappa, sampler="wood", seed=0)
    for layer in (default, wood):
        layer.build(mu.shape)
    seeds = keras.random.SeedGenerator(1)
    k = tf.constant(kappa, tf.float32)
    # TFP's seed is an argument of the traced function: a constant seed lets grappler
    # constant-fold the normal noise (shape and seed known at trace time), which made
    # TFP look faster than drawing the noise at all for (20,000 x d) up to ~10 MB.
    fns = {
        "noise": lambda m, s: keras.random.normal(tf.shape(m), seed=seeds),
        "ours": lambda m, s: default.sample(m),
        "ours_wood": lambda m, s: wood.sample(m),
        "ours_layer": lambda m, s: default(m, training=True),
        "tfp_batched": lambda m, s: tfp.distributions.VonMisesFisher(m, k).sample(seed=s),
        "tfp_one_direction": lambda m, s: tfp.distributions.VonMisesFisher(m[0], k).sample(n, seed=s),
    }
    t = traced_sampler_ms(fns, mu)
    return {
        "ms": {name: round(v, 2) for name, v in t.items()},
        "sample_over_noise": round(t["ours"] / t["noise"], 2),
        "speedup_vs_tfp_batched": round(t["tfp_batched"] / t["ours"], 2),
        "wood_speedup_vs_tfp_batched": round(t["tfp_batched"] / t["ours_wood"], 2),
        "layer_speedup_vs_tfp_batched": round(t["tfp_batched"] / t["ours_layer"], 2),
        "speedup_vs_tfp_one_direction": round(t["tfp_one_direction"] / t["ours"], 2),
    }


if __name__ == "__main__":
    sphere_sampling_grid(measure)
