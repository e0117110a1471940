"""Power Spherical sampling throughput against TFP and against our vMF samplers.

Run: python benchmarks/power_spherical.py [--samples 20000]
Prints one JSON object. For d in {3, 16, 128, 768} and kappa in {10, 1000},
20,000 samples, each a `tf.function` call taking a batch of 20,000 different unit
mean directions as its argument (median of 7):

- ours: `PowerSpherical.sample(mu)` (float64 Gamma draws, float32 reflection);
- ours_per_example: the same with a tensor of 20,000 kappas (what an encoder's
  kappa head gives);
- tfp: `tfp.distributions.PowerSpherical(mu, kappa).sample()`, the peer;
- vmf: `VonMisesFisher.sample(mu)` with its default sampler (closed form at d = 3,
  the inverse-CDF table otherwise: fixed kappa only) and with Wood's sampler (the
  one a learned or per-example kappa uses);
- noise: `keras.random.normal` of the same (20,000, d) shape, the floor.

Ratios in the same run: TFP time / ours (speed-up), vMF time / ours, ours / noise.
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

    from keras_space.layers import PowerSpherical, VonMisesFisher

    ours = PowerSpherical(kappa, seed=0)
    per_example = PowerSpherical(kappa=None, seed=0)
    vmf_default = VonMisesFisher(kappa, seed=0)
    vmf_wood = VonMisesFisher(kappa, sampler="wood", seed=0)
    for layer in (ours, vmf_default, vmf_wood):
        layer.build(mu.shape)
    per_example.build([mu.shape, (n,)])
    kappas = tf.fill([n], tf.constant(kappa, tf.float64))
    seeds = keras.random.SeedGenerator(1)
    k = tf.constant(kappa, tf.float32)
    fns = {  # TFP's seed is an argument: a constant one lets grappler fold its noise
        "noise": lambda m, s: keras.random.normal(tf.shape(m), seed=seeds),
        "ours": lambda m, s: ours.sample(m),
        "ours_per_example": lambda m, s: per_example.sample(m, kappas),
        "tfp": lambda m, s: tfp.distributions.PowerSpherical(m, k).sample(seed=s),
        "vmf_default": lambda m, s: vmf_default.sample(m),
        "vmf_wood": lambda m, s: vmf_wood.sample(m),
    }
    t = traced_sampler_ms(fns, mu)
    return {
        "ms": {name: round(v, 2) for name, v in t.items()},
        "ours_over_noise": round(t["ours"] / t["noise"], 2),
        "speedup_vs_tfp": round(t["tfp"] / t["ours"], 2),
        "per_example_speedup_vs_tfp": round(t["tfp"] / t["ours_per_example"], 2),
        "speedup_vs_vmf_default": round(t["vmf_default"] / t["ours"], 2),
        "speedup_vs_vmf_wood": round(t["vmf_wood"] / t["ours"], 2),
    }


if __name__ == "__main__":
    sphere_sampling_grid(measure)
