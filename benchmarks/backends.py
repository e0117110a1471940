"""The three backend-specific code paths on JAX against TensorFlow, same run.

Run: python benchmarks/backends.py [--steps 20]
Prints one JSON object. The script runs itself once per backend, one after the
other, in fresh processes (a process has one Keras backend), each timing
`model.fit` steps (the median step after 3 warm-up steps, compilation
excluded; for GradCache also the first step, its compilation or tracing included):
  - GradCache: `GradCacheModel` on an MLP encoder (256 -> 512 -> 512 -> 128),
    batch 512 in micro-batches of 64, InfoNCE, Adam;
  - accumulation: `GradientAccumulator(AdamW, 4)` on an MLP
    (784 -> 512 -> 512 -> 10), micro-batch 64;
  - vMF sampling: a vMF-VAE step (784 -> 256 -> `VonMisesFisher(d=64)` with a
    learned kappa (Wood's sampler and its implicit gradient) -> 256 -> 784),
    batch 1024.
Ratios are JAX time / TensorFlow time (below 1: JAX faster). float32, CPU.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(steps):
    import keras
    import numpy as np

    from keras_space.layers import VonMisesFisher
    from keras_space.losses import InfoNCE
    from keras_space.models import GradCacheModel
    from keras_space.optimizers import GradientAccumulator

    class StepTimes(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    def step_time(model, x, y, batch_size):
        timer = StepTimes()
        timer.times = []
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                  steps_per_epoch=steps + 3, callbacks=[timer])
        return float(np.median(timer.times[3:])), timer.times[0]

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    mlp = lambda sizes: keras.Sequential(  # noqa: E731
        [keras.Input((sizes[0],))] + [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
        + [keras.layers.Dense(sizes[-1])])
    out = {}

    a = rng.normal(size=(512 * (steps + 3), 256)).astype("float32")
    grad_cache = GradCacheModel(mlp((256, 512, 512, 128)), micro_batch_size=64)
    grad_cache.compile("adam", InfoNCE(0.05))
    out["grad_cache_step_s"], out["grad_cache_first_step_s"] = step_time(
        grad_cache, (a, a + 0.1), None, 512)

    x = rng.normal(size=(64 * (steps + 3) * 4, 784)).astype("float32")
    y = rng.integers(0, 10, len(x))
    accumulated = mlp((784, 512, 512, 10))
    accumulated.compile(GradientAccumulator(keras.optimizers.AdamW(1e-3), 4),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    out["accumulation_micro_step_s"] = step_time(accumulated, x, y, 64)[0]

    images = rng.uniform(size=(1024 * (steps + 3), 784)).astype("float32")
    inputs = keras.Input((784,))
    z = VonMisesFisher(10.0, learn_kappa=True, seed=0)(keras.layers.Dense(64)(
        keras.layers.Dense(256, activation="relu")(inputs)))
    vae = keras.Model(inputs, keras.layers.Dense(784)(keras.layers.Dense(256, activation="relu")(z)))
    vae.compile("adam", "mse")
    out["vmf_vae_step_s"] = step_time(vae, images, images, 1024)[0]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--measure", action="store_true", help="(internal) time this backend")
    args = parser.parse_args()
    if args.measure:
        import keras

        print(json.dumps({"backend": keras.backend.backend(), **measure(args.steps)}))
        return
    results = {}
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run([sys.executable, __file__, "--measure", "--steps", str(args.steps)],
                             capture_output=True, text=True, env=env, check=True)
        results[backend] = json.loads(run.stdout.strip().splitlines()[-1])
    ratios = {key[:-len("_s")] + "_jax_over_tensorflow":
              round(results["jax"][key] / results["tensorflow"][key], 2)
              for key in results["tensorflow"] if key.endswith("_s")}
    print(json.dumps({"steps": args.steps, **ratios, "seconds": results}))


if __name__ == "__main__":
    main()
