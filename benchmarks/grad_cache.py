"""GradCacheModel: peak memory and step time against plain full-batch and micro-batch steps.

Run: python benchmarks/grad_cache.py [--batch 512] [--micro 32] [--seq 128] [--negatives 0]
     python benchmarks/grad_cache.py --batch 256 --negatives 3   # (anchor, positive, 3 negatives)
     python benchmarks/grad_cache.py --encoder minilm --seq 24 --loss cosent --batch 128
Prints one JSON object. Each mode runs in its own process (peak resident
memory is per process): a token encoder (embedding, 4 Dense+GELU layers of
width 256 over 128 tokens, dropout, mean pooling; or with `--encoder minilm` the
pretrained MiniLM with mean pooling) trained with InfoNCE (or `--loss cosent`:
CoSENT on pairs with scores; `--loss matryoshka`: Matryoshka(CoSENT) over the prefixes
32, 64, ... up to the width) by
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


def encoder(seq, width, kind="tokens"):
    import keras

    from keras_space.utils import set_deterministic

    set_deterministic(0)
    if kind == "minilm":
        import keras_hub

        from keras_space.models import sentence_encoder
        from keras_space.utils import minilm_path

        return sentence_encoder(keras_hub.models.BertBackbone.from_preset(minilm_path()))
    inputs = keras.Input((seq,), dtype="int32")
    h = keras.layers.Embedding(1000, width)(inputs)
    for _ in range(4):
        h = keras.layers.Dense(width, activation="gelu")(h)
        h = keras.layers.Dropout(0.1)(h)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(h))


def loss_fn(kind, width):
    from keras_space.losses import CoSENT, InfoNCE, Matryoshka

    if kind == "infonce":
        return InfoNCE(0.05)
    if kind == "cosent":
        return CoSENT()
    dims = [d for d in (32, 64, 128, 256, 384, 512, 768, 1024) if d < width] + [width]
    return Matryoshka(CoSENT(), dims)


class PlainContrastive:
    """A plain train step: one tape over the whole batch."""

    def __init__(self, enc, loss):
        import keras

        self.enc = enc
        self.loss = loss
        self.opt = keras.optimizers.Adam(1e-4)

    def step(self, parts, y):
        import tensorflow as tf

        @tf.function
        def run(parts, y):
            with tf.GradientTape() as tape:
                reps = tf.stack([self.enc(part, training=True) for part in parts], axis=1)
                loss = self.loss(y, reps)
            self.opt.apply(tape.gradient(loss, self.enc.trainable_weights), self.enc.trainable_weights)
            return loss

        self.step = run
        return run(parts, y)


def child(mode, batch, micro, seq, width, negatives, kind, loss_kind):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    size = micro if mode == "small" else batch
    enc = encoder(seq, width, kind)
    if kind == "minilm":   # sentences of `seq` real tokens
        parts = tuple({"token_ids": tf.constant(rng.integers(1000, 30000, size=(size, seq)), tf.int32),
                       "padding_mask": tf.ones((size, seq), tf.bool),
                       "segment_ids": tf.zeros((size, seq), tf.int32)} for _ in range(2 + negatives))
    else:
        parts = tuple(tf.constant(rng.integers(0, 1000, size=(size, seq)), tf.int32)
                      for _ in range(2 + negatives))
    loss = loss_fn(loss_kind, enc.output.shape[-1])
    y = None if loss_kind == "infonce" else tf.constant(rng.uniform(1, 5, size=size), tf.float32)
    if mode == "gradcache":
        import keras

        from keras_space.models import GradCacheModel

        model = GradCacheModel(enc, micro_batch_size=micro)
        model.compile(keras.optimizers.Adam(1e-4), loss=loss)
        model.make_train_function()
        data = (parts,) if y is None else (parts, y)
        step = lambda: model.train_function(iter([data]))  # noqa: E731
    else:
        plain = PlainContrastive(enc, loss)
        step = lambda: plain.step(parts, y)  # noqa: E731
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
    parser.add_argument("--encoder", choices=("tokens", "minilm"), default="tokens")
    parser.add_argument("--loss", choices=("infonce", "cosent", "matryoshka"), default="infonce")
    parser.add_argument("--child", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.micro, args.seq, args.width, args.negatives,
              args.encoder, args.loss)
        return
    results = {}
    for mode in ("gradcache", "full", "small"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--batch", str(args.batch), "--micro", str(args.micro),
             "--seq", str(args.seq), "--width", str(args.width), "--negatives", str(args.negatives),
             "--encoder", args.encoder, "--loss", args.loss],
            capture_output=True, text=True, check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    g, f, s = results["gradcache"], results["full"], results["small"]
    print(
        json.dumps(
            {
                "batch": args.batch,
                "micro_batch": args.micro,
                "encoder": args.encoder,
                "loss": args.loss,
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
