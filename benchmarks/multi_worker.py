"""GradCacheModel across two TensorFlow worker processes on 127.0.0.1 against one process:
step time, and bytes sent per step over the loopback interface, against a model of
what one step communicates.

Run: python benchmarks/multi_worker.py [--steps 8]
Prints one JSON object. Model: an MLP encoder (64 -> 1024 -> 1024 -> 128, P = 1.25 M
parameters) trained on pairs with InfoNCE in micro-batches of 32, float32, at global
batches 64, 256 and 1024, and at 256 under GradientAccumulator(steps=4). Each setting
runs 2 epochs of `--steps` steps; the second is measured: the median step time, and
the growth of the loopback's byte counter (/proc/net/dev, what both workers sent)
per step. Both workers share this machine's cores, so the point is the communication
count and the overhead, not a speed-up.

The model, per worker and step, for W workers, global batch B, T towers, embedding
width d, P parameters and k accumulation steps (ring algorithms, float32):
all-gather of the embeddings (W-1)/W * B*T*d*4 bytes, every step; all-reduce of the
parameter gradients 2(W-1)/W * P*4 bytes, once per update (every k steps).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SETTINGS = [(64, 1), (256, 1), (1024, 1), (256, 4)]  # (global batch, accumulation steps)
WIDTH, TOWERS = 128, 2

RUN = """
import json, os, time
import numpy as np, tensorflow as tf, keras
from keras_space.losses import InfoNCE
from keras_space.models import GradCacheModel
from keras_space.optimizers import GradientAccumulator
from keras_space.utils import enable_multi_worker_fit

enable_multi_worker_fit()
strategy = tf.distribute.MultiWorkerMirroredStrategy() if "TF_CONFIG" in os.environ else tf.distribute.get_strategy()

def loopback_bytes():
    for line in open("/proc/net/dev"):
        name, _, fields = line.partition(":")
        if name.strip() == "lo":
            return int(fields.split()[8])  # bytes transmitted
    return 0

class Clock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.times, self.bytes_at = [time.perf_counter()], loopback_bytes()
    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
    def on_epoch_end(self, epoch, logs=None):
        self.bytes = loopback_bytes() - self.bytes_at

out = []
for batch, accumulate in SETTINGS:
    with strategy.scope():
        keras.utils.set_random_seed(0)
        encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(1024, activation="gelu"),
                                    keras.layers.Dense(1024, activation="gelu"), keras.layers.Dense(WIDTH)])
        model = GradCacheModel(encoder, micro_batch_size=32)
        optimizer = keras.optimizers.Adam(1e-4)
        model.compile(GradientAccumulator(optimizer, accumulate) if accumulate > 1 else optimizer,
                      InfoNCE(0.05))
    rng = np.random.default_rng(0)
    a = rng.normal(size=(batch * STEPS, 64)).astype("float32")
    p = (a + 0.1 * rng.normal(size=a.shape)).astype("float32")
    clock = Clock()
    model.fit((a, p), batch_size=batch, epochs=2, shuffle=False, verbose=0, callbacks=[clock])
    out.append({"batch": batch, "accumulate": accumulate, "params": model.count_params(),
                "step_s": float(np.median(np.diff(clock.times))), "loopback_bytes_per_step": clock.bytes / STEPS})
print("RESULT", json.dumps(out).replace(" ", ""))
"""


def predicted(workers, batch, params, accumulate, steps):
    """Bytes per worker and step of the measured (second) epoch: embeddings gathered at
    every step, gradients all-reduced at each of its updates."""
    ring = (workers - 1) / workers
    gather = ring * batch * TOWERS * WIDTH * 4
    updates = 2 * steps // accumulate - steps // accumulate
    reduce = 2 * ring * params * 4 * updates / steps
    return gather, reduce


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    from keras_space.testing import run_workers

    code = f"SETTINGS = {SETTINGS!r}\nWIDTH = {WIDTH}\nSTEPS = {args.steps}\n" + RUN
    start = time.perf_counter()
    workers = json.loads(run_workers(code, num_workers=2, timeout=1200)[0][0])
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    one = json.loads([line for line in alone.stdout.splitlines() if line.startswith("RESULT")][-1].split()[1])
    rows = []
    for w, o in zip(workers, one, strict=True):
        gather, reduce = predicted(2, w["batch"], w["params"], w["accumulate"], args.steps)
        rows.append({
            "global_batch": w["batch"], "accumulate": w["accumulate"], "params": w["params"],
            "step_s_one_process": round(o["step_s"], 4), "step_s_two_workers": round(w["step_s"], 4),
            "two_workers_over_one_process": round(w["step_s"] / o["step_s"], 2),
            "loopback_MB_per_step_measured": round(w["loopback_bytes_per_step"] / 1e6, 3),
            "model_MB_per_step_both_workers": round(2 * (gather + reduce) / 1e6, 3),
            "model_embedding_gather_MB": round(2 * gather / 1e6, 3),
            "model_gradient_all_reduce_MB": round(2 * reduce / 1e6, 3),
        })
    print(json.dumps({"benchmark": "multi_worker", "workers": 2, "steps_per_epoch": args.steps,
                      "machine_cores": os.cpu_count(), "seconds": round(time.perf_counter() - start),
                      "settings": rows}, indent=1))


if __name__ == "__main__":
    main()
