"""Shared timing helpers for the benchmark scripts."""

import time

import numpy as np


def best_time(fn, repeats=7, warmup=2):
    """Median wall time of fn() over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def traced_sampler_ms(fns, mu):
    """{name: ms}: each fn(mu, seed) as a `tf.function`, median of 7. The seed is an
    argument of the traced function (a new one each call): a constant seed lets
    grappler constant-fold a sampler's noise (shape and seed known at trace time)."""
    import itertools

    import tensorflow as tf

    calls = itertools.count()
    out = {}
    for name, fn in fns.items():
        f = tf.function(fn)
        out[name] = best_time(lambda f=f: f(mu, tf.constant([1, next(calls)])).numpy()) * 1e3
    return out


def sphere_sampling_grid(measure, dims=(3, 16, 128, 768), kappas=(10.0, 1000.0)):
    """Run `measure(d, kappa, mu, n)` over the grid on `--samples` different unit mean
    directions (float32, seeded) and print one JSON object."""
    import argparse
    import json

    from keras_space.utils import set_deterministic

    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    set_deterministic(0)  # before TensorFlow starts
    import tensorflow as tf

    n = args.samples
    rows = {}
    for d in dims:
        mu = np.random.default_rng(0).normal(size=(n, d))
        mu = tf.constant((mu / np.linalg.norm(mu, axis=1, keepdims=True)).astype("float32"))
        for kappa in kappas:
            rows[f"d={d},kappa={int(kappa)}"] = measure(d, kappa, mu, n)
    print(json.dumps({"samples_per_call": n, "results": rows}))
