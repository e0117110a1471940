"""The pretrained MiniLM fine-tuned on SICK relatedness with CoSENT through GradCacheModel.

Run: python examples/sick_similarity.py --sts-dir ../shared/data/sts --sick-dir ../shared/data/sick
         [--batch-sizes 32,128,512] [--micro-batch-size 32] [--epochs 3] [--seeds 0,1,2]
         [--matryoshka 32,64,128,256,384]

Training data: SICK train's 4,500 pairs with their relatedness scores (1-5), less a
held-out tenth (`--dev-fraction`) on which settings are chosen (its Spearman is
printed after every epoch); the bi-encoder is the pretrained MiniLM with mean pooling
(`sentence_encoder`), trained with `CoSENT(scale=20)` in `GradCacheModel` (the batch's
gradient exactly, `--micro-batch-size` pairs' activations at a time), AdamW with the
library's linear warm-up and decay. For each batch size and seed, from the pretrained
weights: SICK trial and every STS file (averaged per year, never trained on), before
and after, Spearman x 100. Equal epochs and the same schedule shape for every batch
size (so a larger batch takes fewer, larger steps). Each batch is trimmed to its longest
pair (exact: padded positions are masked), which halves the time of SICK's short
sentences. With `--matryoshka`, the loss is `Matryoshka(CoSENT, dims)`; SICK trial is
also scored on the first d coordinates for each d of `--widths` (before and after).
Prints one JSON object.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from supervised_simcse import (  # noqa: E402
    DEFAULT_SICK,
    DEFAULT_STS,
    evaluate,
    fresh_encoder,
    preprocessors_and_data,
)

from keras_space.callbacks import SimilarityEvaluator, similarity_correlations  # noqa: E402
from keras_space.losses import CoSENT, Matryoshka  # noqa: E402
from keras_space.models import GradCacheModel, encode_texts  # noqa: E402
from keras_space.optimizers.schedules import warmup_linear_decay  # noqa: E402
from keras_space.utils import set_deterministic  # noqa: E402


def split(sick, fraction, seed=0):
    """(train rows, dev rows) of SICK train: a fixed random `fraction` held out."""
    order = np.random.default_rng(seed).permutation(len(sick.pair_ids))
    cut = int(round(len(order) * fraction))
    return order[cut:], order[:cut]


def dev_evaluator(encoder, sick, dev_rows, eval_pre):
    """Spearman on the held-out rows of SICK train (logged as `dev_spearman`)."""
    pairs = ([sick.sentences_a[i] for i in dev_rows], [sick.sentences_b[i] for i in dev_rows])
    return SimilarityEvaluator(pairs, np.asarray(sick.relatedness)[dev_rows], encoder, name="dev",
                               encode=lambda enc, t: encode_texts(enc, eval_pre, t))


def trimmed(x):
    """A batch of preprocessed sentences cut to its longest one (padding is masked, so the
    embeddings are the same)."""
    length = tf.reduce_max(tf.reduce_sum(tf.cast(x["padding_mask"], "int32"), axis=1))
    return {k: v[:, :length] for k, v in x.items()}


def training_data(train_pre, sick, rows, batch_size, seed):
    """((first sentences, second sentences), gold scores) batches, reshuffled every epoch."""
    take = lambda values: [values[i] for i in rows]  # noqa: E731
    x = tuple({k: np.asarray(v) for k, v in train_pre(take(part)).items()}
              for part in (sick.sentences_a, sick.sentences_b))
    scores = np.asarray(sick.relatedness, "float32")[rows]
    return (tf.data.Dataset.from_tensor_slices((x, scores))
            .shuffle(len(rows), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
            .map(lambda x, y: ((trimmed(x[0]), trimmed(x[1])), y)).prefetch(2))


def train(args, batch_size, seed, train_pre, eval_pre, sick, rows, dev_rows):
    set_deterministic(seed)
    encoder = fresh_encoder()
    steps = args.epochs * int(np.ceil(len(rows) / batch_size))
    schedule = warmup_linear_decay(args.learning_rate, max(1, steps // 10), steps)
    loss = CoSENT(args.scale)
    if args.matryoshka:
        loss = Matryoshka(loss, dims=[int(d) for d in args.matryoshka.split(",")])
    model = GradCacheModel(encoder, micro_batch_size=min(args.micro_batch_size, batch_size))
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.01), loss=loss)
    dev = dev_evaluator(encoder, sick, dev_rows, eval_pre)
    start = time.perf_counter()
    history = model.fit(training_data(train_pre, sick, rows, batch_size, seed),
                        epochs=args.epochs, shuffle=False,  # the dataset reshuffles
                        callbacks=[dev], verbose=2)
    return encoder, {"seconds": round(time.perf_counter() - start, 1),
                     "dev_spearman_per_epoch": [round(100 * v, 2)
                                                for v in history.history["dev_spearman"]]}


def by_width(encoder, eval_pre, sets, widths):
    """SICK trial's Spearman x 100 on the first d coordinates of the embeddings, per d."""
    (first, second), gold = sets["SICK-R trial"]
    u, v = (encode_texts(encoder, eval_pre, list(part)) for part in (first, second))
    return {d: round(100 * similarity_correlations(u[:, :d], v[:, :d], gold)[0], 2)
            for d in widths}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--sick-dir", default=DEFAULT_SICK)
    parser.add_argument("--batch-sizes", default="32")
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--sequence-length", type=int, default=40)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--matryoshka", default="", help="prefix widths, e.g. 32,64,128,256,384")
    parser.add_argument("--widths", default="32,64,128,256,384")
    parser.add_argument("--interpolate", default="",
                        help="also score (1 - a) pretrained + a fine-tuned weights, for each a")
    args = parser.parse_args()
    widths = [int(d) for d in args.widths.split(",")]
    set_deterministic(0)  # before TensorFlow starts
    eval_pre, train_pre, sets, sick = preprocessors_and_data(args)
    rows, dev_rows = split(sick, args.dev_fraction)
    pretrained = fresh_encoder()
    start = pretrained.get_weights()
    result = {"spearman_before": evaluate(pretrained, eval_pre, sets), "runs": {}}
    result["spearman_before"]["SICK-R dev (held out of train)"] = round(
        100 * dev_evaluator(pretrained, sick, dev_rows, eval_pre).evaluate()["dev_spearman"], 2)
    result["sick_trial_by_width_before"] = by_width(pretrained, eval_pre, sets, widths)
    print(json.dumps(result["spearman_before"]), flush=True)
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            encoder, info = train(args, batch_size, seed, train_pre, eval_pre, sick, rows, dev_rows)
            info["spearman_after"] = evaluate(encoder, eval_pre, sets)
            info["sick_trial_by_width"] = by_width(encoder, eval_pre, sets, widths)
            # weights (1 - a) pretrained + a fine-tuned (WiSE-FT, Wortsman et al., 2022)
            fine_tuned = encoder.get_weights()
            for alpha in (float(a) for a in filter(None, args.interpolate.split(","))):
                encoder.set_weights([(1 - alpha) * w0 + alpha * w1
                                     for w0, w1 in zip(start, fine_tuned, strict=True)])
                info[f"spearman_interpolated_{alpha}"] = evaluate(encoder, eval_pre, sets)
            result["runs"][f"batch={batch_size},seed={seed}"] = info
            print(json.dumps({f"batch={batch_size},seed={seed}": info}), flush=True)
    loss = f"CoSENT(scale={args.scale})"
    if args.matryoshka:
        loss = f"Matryoshka({loss}, dims=({args.matryoshka}))"
    result["setup"] = (f"SICK train relatedness ({len(rows)} pairs, {len(dev_rows)} held out), "
                       f"{loss}, {args.epochs} epochs, AdamW {args.learning_rate} "
                       f"with 10 % warm-up and linear decay, micro-batches of {args.micro_batch_size}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
