"""The fine-tuning recipe's cost against plain AdamW fine-tuning of the same model.

Run: python benchmarks/fine_tune.py

The pretrained MiniLM with a regression head on (batch, 96) token batches, each
configuration in its own process (peak RSS is per process):
- "plain": AdamW(2e-5, weight_decay=0.01), one update per batch;
- "recipe": GradientAccumulator(LayerwiseLearningRate(AdamW(warmup_linear_decay,
  weight_decay=0.01, use_ema=True), layerwise_decay(backbone, 0.9)), steps=2):
  what examples/fine_tune.py trains with.
Reported: median time per `train_on_batch` call (a micro-batch for the recipe)
over 10 calls after 3 warm-up calls, peak RSS, and the `.keras` file size after
training. Prints one JSON object.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def child(mode, batch, seq):
    import keras
    import keras_hub
    import numpy as np

    from keras_space.optimizers import (
        GradientAccumulator,
        LayerwiseLearningRate,
        layerwise_decay,
    )
    from keras_space.optimizers.schedules import warmup_linear_decay
    from keras_space.utils import minilm_path, set_deterministic

    set_deterministic(0)
    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    model = keras.Model(backbone.input, keras.layers.Dense(1)(backbone.output["pooled_output"]))
    if mode == "plain":
        optimizer = keras.optimizers.AdamW(2e-5, weight_decay=0.01)
    else:
        inner = keras.optimizers.AdamW(warmup_linear_decay(2e-5, 10, 100), weight_decay=0.01,
                                       use_ema=True)
        optimizer = GradientAccumulator(
            LayerwiseLearningRate(inner, layerwise_decay(backbone, 0.9)), steps=2)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1000, 30000, (batch, seq)).astype("int32"),
         "segment_ids": np.zeros((batch, seq), "int32"),
         "padding_mask": np.ones((batch, seq), "int32")}
    y = rng.random((batch, 1)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, y)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        size_mb = os.path.getsize(path) / 2**20
    print(json.dumps({"mode": mode, "step_s": float(np.median(times)), "peak_rss_mb": peak_mb,
                      "keras_file_mb": size_mb, "params": model.count_params()}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.seq)
        return
    results = {}
    for mode in ("plain", "recipe"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(args.batch),
             "--seq", str(args.seq)], capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    r, p = results["recipe"], results["plain"]
    print(json.dumps({
        "batch": args.batch, "sequence_length": args.seq, "results": results,
        "step_time_ratio_recipe_vs_plain_adamw": round(r["step_s"] / p["step_s"], 3),
        "peak_rss_ratio_recipe_vs_plain_adamw": round(r["peak_rss_mb"] / p["peak_rss_mb"], 3),
        "keras_file_ratio_recipe_vs_plain_adamw": round(r["keras_file_mb"] / p["keras_file_mb"], 3),
    }))


if __name__ == "__main__":
    main()
