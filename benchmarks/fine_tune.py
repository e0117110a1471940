"""The fine-tuning recipe's cost against plain AdamW fine-tuning of the same model.

Run: python benchmarks/fine_tune.py [--batch 32] [--accumulate 2] [--seq 40]

The model of examples/fine_tune.py (the pretrained MiniLM as a SICK cross-encoder:
masked mean of the packed pair's tokens, a relatedness head (MSE) and an entailment
head (cross-entropy)) on random token batches of `--seq` tokens (SICK's packed pairs,
trimmed to the longest in a batch, are 20-40 tokens), each configuration in its own
process (peak RSS is per process), `--batch` pairs per update for both:
- "plain": AdamW(2e-5, weight_decay=0.01), one `train_on_batch` of `--batch` pairs per update;
- "recipe": GradientAccumulator(LayerwiseLearningRate(AdamW(warmup_linear_decay,
  weight_decay=0.01, use_ema=True), layerwise_decay(backbone, 0.9)), steps=`--accumulate`):
  what examples/fine_tune.py trains with, `--accumulate` micro-batches per update.
Reported: median time per update over 10 updates after 3 warm-up updates, peak RSS,
and the `.keras` file size after training. Prints one JSON object.
"""

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")


def example_cross_encoder():
    """`cross_encoder` of examples/fine_tune.py (a file of the same name as this one)."""
    sys.path.insert(0, EXAMPLES)   # it imports its sibling examples
    spec = importlib.util.spec_from_file_location("fine_tune_example",
                                                  os.path.join(EXAMPLES, "fine_tune.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cross_encoder()


def child(mode, batch, accumulate, seq):
    import keras
    import numpy as np

    from keras_space.optimizers import (
        GradientAccumulator,
        LayerwiseLearningRate,
        layerwise_decay,
    )
    from keras_space.optimizers.schedules import warmup_linear_decay
    from keras_space.utils import set_deterministic

    set_deterministic(0)
    model, backbone = example_cross_encoder()
    if mode == "plain":
        optimizer, calls = keras.optimizers.AdamW(2e-5, weight_decay=0.01), 1
    else:
        inner = keras.optimizers.AdamW(warmup_linear_decay(2e-5, 10, 100), weight_decay=0.01,
                                       use_ema=True)
        optimizer = GradientAccumulator(
            LayerwiseLearningRate(inner, layerwise_decay(backbone, 0.9)), steps=accumulate)
        calls = accumulate
    model.compile(optimizer=optimizer,
                  loss={"relatedness": "mse",
                        "entailment": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    rng = np.random.default_rng(0)
    size = batch // calls
    x = {"token_ids": rng.integers(1000, 30000, (size, seq)).astype("int32"),
         "segment_ids": np.zeros((size, seq), "int32"),
         "padding_mask": np.ones((size, seq), "int32")}
    y = {"relatedness": rng.normal(size=(size, 1)).astype("float32"),
         "entailment": rng.integers(0, 3, size).astype("int32")}

    def update():
        for _ in range(calls):
            model.train_on_batch(x, y)

    for _ in range(3):
        update()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        update()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        size_mb = os.path.getsize(path) / 2**20
    print(json.dumps({"mode": mode, "update_s": float(np.median(times)), "peak_rss_mb": peak_mb,
                      "keras_file_mb": size_mb, "params": model.count_params(),
                      "updates": int(model.optimizer.iterations)}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--seq", type=int, default=40)
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.accumulate, args.seq)
        return
    results = {}
    for mode in ("plain", "recipe"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(args.batch),
             "--accumulate", str(args.accumulate), "--seq", str(args.seq)],
            capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    r, p = results["recipe"], results["plain"]
    print(json.dumps({
        "pairs_per_update": args.batch, "accumulate": args.accumulate, "sequence_length": args.seq,
        "results": results,
        "update_time_ratio_recipe_vs_plain_adamw": round(r["update_s"] / p["update_s"], 3),
        "peak_rss_ratio_recipe_vs_plain_adamw": round(r["peak_rss_mb"] / p["peak_rss_mb"], 3),
        "keras_file_ratio_recipe_vs_plain_adamw": round(r["keras_file_mb"] / p["keras_file_mb"], 3),
    }))


if __name__ == "__main__":
    main()
