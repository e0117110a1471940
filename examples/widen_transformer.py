"""Widen the pretrained MiniLM x2 without changing its function, then keep training it.

Run: python examples/widen_transformer.py [--steps 40] [--sts-dir ../shared/data/sts]

1. `widen(backbone, 2, noise=0.01)` turns the 384-wide MiniLM into a 768-wide
   BertBackbone (same 12 heads and 6 layers); `narrow_outputs` reads its
   outputs back and the script prints the max-abs difference to the original.
2. Both the widened model and the same 768-wide architecture with random
   weights are trained as sentence encoders (SBERT's cosine-similarity loss:
   MSE between the cosine of the two mean-pooled embeddings and the gold
   score / 5) on STS 2012-2015 pairs, the same batches in the same order. The
   training loss is printed every few steps, and the held-out STS 2016
   Spearman correlation before and after training.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.callbacks import similarity_correlations  # noqa: E402
from keras_space.datasets import load_sts  # noqa: E402
from keras_space.growth import narrow_outputs, widen  # noqa: E402
from keras_space.models import encode_texts, sentence_encoder  # noqa: E402
from keras_space.utils import minilm_path  # noqa: E402

DEFAULT_STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")


def pairs(folder, years):
    s1, s2, y = [], [], []
    for name, (a, b, scores) in load_sts(folder).items():
        if name.split("/")[0] in years:
            s1 += a
            s2 += b
            y.append(scores)
    return s1, s2, np.concatenate(y) / 5.0


def bi_encoder(backbone):
    """(sentence-1 inputs, sentence-2 inputs) -> cosine of the mean-pooled embeddings."""
    encoder = sentence_encoder(backbone, pooling="mean")
    sides = [
        {n: keras.Input((None,), dtype="int32", name=f"{side}_{n}") for n in ("token_ids", "segment_ids", "padding_mask")}
        for side in ("a", "b")
    ]
    ea, eb = (keras.ops.normalize(encoder({n: t for n, t in s.items()}), axis=-1) for s in sides)
    return keras.Model(sides, keras.ops.sum(ea * eb, axis=-1)), encoder


def spearman_on(encoder, pre, t1, t2, gold):
    return similarity_correlations(encode_texts(encoder, pre, t1), encode_texts(encoder, pre, t2), gold)[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    args = parser.parse_args()

    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=48)
    small = keras_hub.models.BertBackbone.from_preset(path)

    probe = {k: np.asarray(v) for k, v in pre(x=(["A man plays a guitar.", "ok"], ["Someone plays music.", "fine"])).items()}
    big = widen(small, 2, noise=0.01, seed=0)
    want = small.predict(probe, verbose=0)
    got = narrow_outputs(big.predict(probe, verbose=0), 2)
    real = probe["padding_mask"].astype(bool)
    print(f"MiniLM {small.hidden_dim} wide, {small.count_params():,} weights -> "
          f"{big.hidden_dim} wide, {big.count_params():,} weights")
    print("max |narrow(widened) - original|: sequence output "
          f"{np.abs(got['sequence_output'][real] - want['sequence_output'][real]).max():.2e}, "
          f"pooled output {np.abs(got['pooled_output'] - want['pooled_output']).max():.2e}")

    s1, s2, y = pairs(args.sts_dir, {"2012", "2013", "2014", "2015"})
    t1, t2, ty = pairs(args.sts_dir, {"2016"})
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))[: args.steps * args.batch]
    test = rng.permutation(len(ty))[:300]
    t1, t2, ty = [t1[i] for i in test], [t2[i] for i in test], ty[test]

    scratch = type(big).from_config(big.get_config())
    models = {"widened MiniLM": bi_encoder(big), "same size, from scratch": bi_encoder(scratch)}
    before = {name: spearman_on(enc, pre, t1, t2, ty) for name, (_, enc) in models.items()}
    original = spearman_on(sentence_encoder(small, pooling="mean"), pre, t1, t2, ty)
    print(f"held-out STS16 Spearman of the original MiniLM: {original:.3f}")
    for model, _ in models.values():
        model.compile(keras.optimizers.AdamW(2e-5), "mse")
    print(f"\nSTS bi-encoder, batch {args.batch}, AdamW 2e-5 (training loss, mean of the last 5 steps)")
    print("| step | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    history = {name: [] for name in models}
    for step in range(args.steps):
        idx = order[step * args.batch : (step + 1) * args.batch]
        a = pre([s1[i] for i in idx])
        b = pre([s2[i] for i in idx])
        for name, (model, _) in models.items():
            history[name].append(float(model.train_on_batch([a, b], y[idx])))
        if (step + 1) % 10 == 0 or step == 0:
            row = " | ".join(f"{np.mean(history[n][-5:]):.4f}" for n in models)
            print(f"| {step + 1} | {row} |", flush=True)
    print("| held-out STS16 Spearman, before | " + " | ".join(f"{before[n]:.3f}" for n in models) + " |")
    after = {name: spearman_on(enc, pre, t1, t2, ty) for name, (_, enc) in models.items()}
    print("| held-out STS16 Spearman, after | " + " | ".join(f"{after[n]:.3f}" for n in models) + " |")

if __name__ == "__main__":
    main()
