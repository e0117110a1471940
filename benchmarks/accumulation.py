"""GradientAccumulator: step-time overhead, accumulator memory, and exactness.

Run: python benchmarks/accumulation.py [--steps 8] [--micro-batch 32]
Prints one JSON object. An MLP (784 -> 512 -> 512 -> 10, 0.67 M weights) is
trained with `model.fit` at the same micro-batch by:
  - the bare inner optimizer (AdamW),
  - keras_space GradientAccumulator(AdamW, steps),
  - Keras's built-in AdamW(gradient_accumulation_steps=steps);
time per micro-step is reported as ratios against the first and the third,
measured in the same run. Exactness: relative weight error after 3 real
updates against one batch of steps * micro_batch, with weight decay and a
PolynomialDecay schedule.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.optimizers import GradientAccumulator  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


def model():
    set_deterministic(0)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def adamw(decay_steps=100):
    schedule = keras.optimizers.schedules.PolynomialDecay(1e-3, decay_steps=decay_steps, end_learning_rate=1e-5)
    return keras.optimizers.AdamW(schedule, weight_decay=0.05)


def times_per_step(optimizers, x, y, batch, rounds=5):
    """Best time per micro-step of each optimizer, measured round-robin so that
    the machine's drift hits all of them alike."""
    models = []
    for optimizer in optimizers:
        m = model()
        m.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x[: batch * 16], y[: batch * 16], batch_size=batch, epochs=1, verbose=0)  # trace
        models.append(m)
    best = [np.inf] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            start = time.perf_counter()
            m.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
            best[i] = min(best[i], (time.perf_counter() - start) / (len(x) // batch))
    return best, models


def relative_error(a, b):
    wa = np.concatenate([w.ravel() for w in a.get_weights()]).astype("float64")
    wb = np.concatenate([w.ravel() for w in b.get_weights()]).astype("float64")
    return float(np.linalg.norm(wa - wb) / np.linalg.norm(wa))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=32)
    args = parser.parse_args()
    set_deterministic(0)  # before TensorFlow starts
    k, m = args.steps, args.micro_batch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(m * k * 24, 784)).astype("float32")
    y = rng.integers(0, 10, size=len(x))

    builtin_opt = adamw().__class__.from_config({**adamw().get_config(), "gradient_accumulation_steps": k})
    (bare, ours, builtin), (_, ours_model, _) = times_per_step(
        [adamw(), GradientAccumulator(adamw(), k), builtin_opt], x, y, m
    )

    opt = ours_model.optimizer
    acc_bytes = int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in opt.accumulators))

    # exactness after 3 real updates, decay over 3 updates
    xs, ys = x[: 3 * k * m], y[: 3 * k * m]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    big = model()
    big.compile(adamw(3), loss)
    big.fit(xs, ys, batch_size=k * m, epochs=1, shuffle=False, verbose=0)
    acc = model()
    acc.compile(GradientAccumulator(adamw(3), k), loss)
    acc.fit(xs, ys, batch_size=m, epochs=1, shuffle=False, verbose=0)
    bi = model()
    bi_opt = adamw(3).__class__.from_config({**adamw(3).get_config(), "gradient_accumulation_steps": k})
    bi.compile(bi_opt, loss)
    bi.fit(xs, ys, batch_size=m, epochs=1, shuffle=False, verbose=0)

    print(
        json.dumps(
            {
                "steps": k,
                "micro_batch": m,
                "weights": int(ours_model.count_params()),
                "ms_per_micro_step": {
                    "bare_adamw": round(bare * 1e3, 3),
                    "gradient_accumulator": round(ours * 1e3, 3),
                    "keras_builtin_accumulation": round(builtin * 1e3, 3),
                },
                "time_ratio_vs_bare_inner": round(ours / bare, 3),
                "time_ratio_vs_keras_builtin": round(ours / builtin, 3),
                "accumulator_bytes": acc_bytes,
                "weight_bytes": int(ours_model.count_params() * 4),
                "rel_weight_error_vs_large_batch_after_3_updates": {
                    "gradient_accumulator": relative_error(big, acc),
                    "keras_builtin_accumulation": relative_error(big, bi),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
