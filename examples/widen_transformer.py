"""Widen the pretrained MiniLM x2 without changing its function, then keep training it.

Run: python examples/widen_transformer.py [--steps 40] [--sts-dir ../shared/data/sts]

1. `widen(backbone, 2, noise=0.01)` turns the 384-wide MiniLM into a 768-wide
   BertBackbone (same 12 heads and 6 layers); `narrow_outputs` reads its
   outputs back and the script prints the max-abs difference to the original.
2. Both the widened model and the same 768-wide architecture with random
   weights are trained as STS cross-encoders (sentence pair in, similarity
   score out: Dense on [CLS], MSE on the gold score / 5) on STS 2012-2015,
   the same batches in the same order, and the training loss is printed every
   few steps, with the held-out loss on STS 2016 at the end.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.datasets import load_sts  # noqa: E402
from keras_space.growth import narrow_outputs, widen  # noqa: E402
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


def cross_encoder(backbone):
    cls = backbone.output["sequence_output"][:, 0, :]
    return keras.Model(backbone.input, keras.layers.Dense(1)(cls)[:, 0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    args = parser.parse_args()

    path = minilm_path()
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=64)
    small = keras_hub.models.BertBackbone.from_preset(path)

    probe = {k: np.asarray(v) for k, v in pre((["A man plays a guitar.", "ok"], ["Someone plays music.", "fine"])).items()}
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
    test = rng.permutation(len(ty))[:256]
    x_test = pre(([t1[i] for i in test], [t2[i] for i in test]))

    config = big.get_config()
    scratch = type(big).from_config(config)
    models = {"widened MiniLM": cross_encoder(big), "same size, from scratch": cross_encoder(scratch)}
    for model in models.values():
        keras.utils.set_random_seed(0)
        model.compile(keras.optimizers.AdamW(2e-5), "mse")
    print(f"\nSTS cross-encoder, batch {args.batch}, AdamW 2e-5 (training loss, mean of the last 5 steps)")
    print("| step | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    history = {name: [] for name in models}
    for step in range(args.steps):
        idx = order[step * args.batch : (step + 1) * args.batch]
        batch = pre(([s1[i] for i in idx], [s2[i] for i in idx]))
        for name, model in models.items():
            history[name].append(float(model.train_on_batch(batch, y[idx])))
        if (step + 1) % 10 == 0 or step == 0:
            row = " | ".join(f"{np.mean(history[n][-5:]):.4f}" for n in models)
            print(f"| {step + 1} | {row} |", flush=True)
    row = " | ".join(f"{model.evaluate(x_test, ty[test], verbose=0):.4f}" for model in models.values())
    print(f"| held-out STS16 MSE | {row} |")


if __name__ == "__main__":
    main()
