"""PTuningCausalLM.generate against keras-hub's own GPT2CausalLM.generate on the same GPT-2.

Run: python benchmarks/p_tuning_generation.py [--layers 4] [--hidden 256] [--new 64]
Prints one JSON object. A random GPT-2 (no pretrained one can be downloaded here;
the cost does not depend on the weights), batch 4, texts of 16 tokens, greedy, `--new`
tokens generated. Timed (median of 5 after one warm-up call that compiles):
  - "keras_hub": `keras_hub.models.GPT2CausalLM(backbone).generate` (its compiled
    generate function), the unprompted peer;
  - "shallow" / "deep": `PTuningCausalLM(backbone, num_virtual_tokens=16, depth=...)`:
    the prompt's keys and values written into the cache once per call;
  - "recompute": the same prompted model re-run on the whole sequence for every new
    token (what a cache-less prompted generate costs), fewer tokens, per token.
Ratios are per generated token against keras_hub in the same run.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402

from keras_space.models import PTuningCausalLM  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--new", type=int, default=64)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=5000, num_layers=args.layers, num_heads=4, hidden_dim=args.hidden,
        intermediate_dim=4 * args.hidden, max_sequence_length=256)
    batch, text, n = 4, 16, 16
    total = text + args.new
    ids = np.random.default_rng(0).integers(10, 5000, (batch, text)).astype("int32")
    x = {"token_ids": np.pad(ids, ((0, 0), (0, args.new))),
         "padding_mask": np.pad(np.ones_like(ids), ((0, 0), (0, args.new)))}
    peer = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    peer.compile(sampler="greedy")
    ms = {"keras_hub": best_time(lambda: peer.generate(x, stop_token_ids=None), 5, 1) * 1e3}
    for depth in ("shallow", "deep"):
        lm = PTuningCausalLM(backbone, num_virtual_tokens=n, depth=depth)
        ms[depth] = best_time(lambda lm=lm: lm.generate(x, max_length=total), 5, 1) * 1e3
    steps = 8  # the cache-less loop, fewer tokens (it is slow), per token below
    lm = PTuningCausalLM(backbone, num_virtual_tokens=n)

    def recompute():
        seqs = ids.copy()
        for _ in range(steps):
            logits = lm.predict_on_batch({"token_ids": seqs, "padding_mask": np.ones_like(seqs)})
            seqs = np.concatenate([seqs, np.asarray(logits)[:, -1].argmax(-1)[:, None]], 1)
        return seqs

    per_token = {k: v / args.new for k, v in ms.items()}
    per_token["recompute"] = best_time(recompute, 3, 1) * 1e3 / steps  # warm-up: a trace per length
    print(json.dumps({
        "backend": keras.backend.backend(), "layers": args.layers, "hidden": args.hidden,
        "batch": batch, "text": text, "virtual_tokens": n, "new_tokens": args.new,
        "ms_per_token": {k: round(v, 2) for k, v in per_token.items()},
        "ratio_to_keras_hub": {k: round(v / per_token["keras_hub"], 2) for k, v in per_token.items()},
    }))


if __name__ == "__main__":
    main()
