"""GradCacheModel: peak memory and step time against plain full-batch and micro-batch steps.

Run: python benchmarks/grad_cache.py [--batch 512] [--micro 32] [--seq 128] [--negatives 0]
     python benchmarks/grad_cache.py --batch 256 --negatives 3   # (anchor, positive, 3 negatives)
Prints one JSON object. Each mode runs in its own process (peak resident
memory is per process): a token encoder (embedding, 4 Dense+GELU layers of
width 256 over 128 tokens, dropout, mean pooling) trained with InfoNCE by
  - "gradcache": GradCacheModel, batch 512 in micro-batches of 32,
  - "full":      a plain train step at batch 512 (one tape over the batch),
  - "small":     a plain train step at batch 32.
Peak RSS is measured after 1 warm-up step and 4 timed steps (median time).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def encoder(seq, width):
    import keras

    from keras_space.utils import set_deterministic

    set_deterministic(0)
    inputs = keras.Input((seq,), dtype="int32")
    h = keras.layers.Embedding(1000, width)(inputs)
    for _ in range(4):
        h = keras.layers.Dense(width, activation="gelu")(h)
        h = keras.layers.Dropout(0.1)(h)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(h))


class PlainContrastive:
    """A plain train step: one tape over the whole batch."""

    def __init__(self, enc):
        import keras

        from keras_space.losses import InfoNCE

        self.enc = enc
        self.loss = InfoNCE(0.05)
        self.opt = keras.optimizers.Adam(1e-4)

    def step(self, parts):
        import tensorflow as tf

        @tf.function
        def run(parts):
            with tf.GradientTape() as tape:
                reps = tf.stack([self.enc(part, training=True) for part in parts], axis=1)
                loss = self.loss(None, reps)
            self.opt.apply(tape.gradient(loss, self.enc.trainable_weights), self.enc.trainable_weights)
            return loss

        self.step = run
        return run(parts)


def child(mode, batch, micro, seq, width, negatives):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    size = micro if mode == "small" else batch
    parts = tuple(tf.constant(rng.integers(0, 1000, size=(size, seq)), tf.int32)
                  for _ in range(2 + negatives))
    enc = encoder(seq, width)
    if mode == "gradcache":
        import keras

        from keras_space.losses import InfoNCE
        from keras_space.models import GradCacheModel

        model = GradCacheModel(enc, micro_batch_size=micro)
        model.compile(keras.optimizers.Adam(1e-4), loss=InfoNCE(0.05))
        model.make_train_function()
        step = lambda: model.train_function(iter([(parts,)]))  # noqa: E731
    else:
        plain = PlainContrastive(enc)
        step = lambda: plain.step(parts)  # noqa: E731
    step()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        out = step()
        _ = [np.asarray(v) for v in (out.values() if isinstance(out, dict) else [out])]
        times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "step_s": float(np.median(times)), "peak_rss_mb": peak_kb / 1024}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--micro", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--negatives", type=int, default=0, help="hard negatives per tuple")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.micro, args.seq, args.width, args.negatives)
        return
    results = {}
    for mode in ("gradcache", "full", "small"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(args.batch), "--micro", str(args.micro),
             "--seq", str(args.seq), "--width", str(args.width), "--negatives", str(args.negatives)],
            capture_output=True, text=True, check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    g, f, s = results["gradcache"], results["full"], results["small"]
    print(
        json.dumps(
            {
                "batch": args.batch,
                "micro_batch": args.micro,
                "tuple": "(anchor, positive" + (f", {args.negatives} negatives)" if args.negatives else ")"),
                "results": results,
                "time_ratio_vs_full_batch_step": round(g["step_s"] / f["step_s"], 3),
                "peak_rss_ratio_vs_full_batch_step": round(g["peak_rss_mb"] / f["peak_rss_mb"], 3),
                "peak_rss_ratio_vs_small_batch_step": round(g["peak_rss_mb"] / s["peak_rss_mb"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
