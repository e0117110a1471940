"""Supervised SimCSE on SICK: the pretrained MiniLM at batch 256 in micro-batches of 32.

Run: python examples/supervised_simcse.py --sts-dir ../shared/data/sts --sick-dir ../shared/data/sick

Training data: SICK train's ENTAILMENT pairs (premise, hypothesis) as (anchor,
positive), 1,299 tuples; with hard negatives, a sentence that contradicts the
premise as the third element (SICK has one for 259 of them; the others get a
random SICK sentence, `sick_contrastive_tuples`). InfoNCE scores every anchor
against all 256 positives and all 256 negatives of the batch; tuples of the same
premise are not each other's negatives (`mask_duplicates`). `GradCacheModel`
trains the batch of 256 exactly in micro-batches of 32 (only 32 tuples'
activations in memory at a time). Evaluation with `SimilarityEvaluator`
(Spearman x 100 of the cosine of mean-pooled embeddings): every STS file in
`--sts-dir` (averaged per year) and SICK trial (relatedness);
before training, after training on pairs, after training on tuples with hard
negatives (each run starts from the pretrained weights). Prints one JSON object.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.callbacks import SimilarityEvaluator  # noqa: E402
from keras_space.datasets import load_sick, load_sts, sick_contrastive_tuples  # noqa: E402
from keras_space.losses import InfoNCE  # noqa: E402
from keras_space.models import GradCacheModel, encode_texts, sentence_encoder  # noqa: E402
from keras_space.utils import minilm_path, set_deterministic  # noqa: E402

HERE = os.path.dirname(__file__)
DEFAULT_STS = os.path.join(HERE, "..", "..", "shared", "data", "sts")
DEFAULT_SICK = os.path.join(HERE, "..", "..", "shared", "data", "sick")


def evaluation_sets(sts_dir, sick_dir):
    """{name: ((sentences1, sentences2), gold)}: every STS file, and SICK trial."""
    sets = {name: ((a, b), gold) for name, (a, b, gold) in load_sts(sts_dir).items()}
    trial = load_sick(os.path.join(sick_dir, "SICK_trial.txt"))
    sets["SICK-R trial"] = ((trial.sentences_a, trial.sentences_b), trial.relatedness)
    return sets


def evaluate(encoder, preprocessor, sets):
    """Spearman x 100 per STS year (the mean over its files, as in the README's
    whitening table), their mean, and SICK trial."""
    per_set = {}
    for name, (pairs, gold) in sets.items():
        evaluator = SimilarityEvaluator(pairs, gold, encoder, name="eval",
                                        encode=lambda enc, x: encode_texts(enc, preprocessor, x))
        per_set[name] = 100 * evaluator.evaluate()["eval_spearman"]
    years = sorted({name.split("/")[0] for name in per_set if "/" in name})
    scores = {f"STS{y[2:]}": round(float(np.mean([v for k, v in per_set.items()
                                                  if k.startswith(y + "/")])), 2) for y in years}
    scores["STS mean"] = round(float(np.mean(list(scores.values()))), 2)
    scores["SICK-R trial"] = round(per_set["SICK-R trial"], 2)
    return scores


def preprocessors_and_data(args):
    """(evaluation preprocessor (length 128), training preprocessor
    (`args.sequence_length`), the evaluation sets, SICK train)."""
    import keras_hub

    path = minilm_path()
    eval_pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=128)
    train_pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        path, sequence_length=args.sequence_length)
    sets = evaluation_sets(args.sts_dir, args.sick_dir)
    return eval_pre, train_pre, sets, load_sick(os.path.join(args.sick_dir, "SICK_train.txt"))


def fresh_encoder():
    import keras_hub

    return sentence_encoder(keras_hub.models.BertBackbone.from_preset(minilm_path()), "mean")


def train(tuples, args, train_pre):
    set_deterministic(args.seed)
    encoder = fresh_encoder()
    parts = [tuples.anchors, tuples.positives] + ([tuples.negatives] if tuples.negatives else [])
    x = tuple({k: np.asarray(v) for k, v in train_pre(part).items()} for part in parts)
    model = GradCacheModel(encoder, micro_batch_size=args.micro_batch_size)
    model.compile(keras.optimizers.AdamW(args.learning_rate, weight_decay=0.01),
                  loss=InfoNCE(args.temperature, mask_duplicates=True))
    start = time.perf_counter()
    history = model.fit(x, tuples.labels, batch_size=args.batch_size, epochs=args.epochs,
                        shuffle=True, verbose=2)
    return encoder, {"seconds": round(time.perf_counter() - start, 1),
                     "final_loss": round(history.history["loss"][-1], 4),
                     "in_batch_accuracy": round(history.history["accuracy"][-1], 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--sick-dir", default=DEFAULT_SICK)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=0.05)
    parser.add_argument("--sequence-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    set_deterministic(args.seed)  # before TensorFlow starts
    eval_pre, train_pre, sets, sick = preprocessors_and_data(args)

    result = {"spearman_before": evaluate(fresh_encoder(), eval_pre, sets)}
    print(json.dumps(result["spearman_before"]), flush=True)
    for name, hard in (("pairs", False), ("hard_negatives", True)):
        tuples = sick_contrastive_tuples(sick, hard_negatives=hard, seed=args.seed)
        encoder, info = train(tuples, args, train_pre)
        info["tuples"] = len(tuples.anchors)
        info["with_a_contradiction"] = int(tuples.hard.sum())
        result[f"train_{name}"] = info
        result[f"spearman_after_{name}"] = evaluate(encoder, eval_pre, sets)
        print(json.dumps(result[f"spearman_after_{name}"]), flush=True)
    result["setup"] = (f"SICK train entailment pairs, {args.epochs} epochs, batch {args.batch_size} "
                       f"in micro-batches of {args.micro_batch_size}, AdamW {args.learning_rate}, "
                       f"temperature {args.temperature}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
