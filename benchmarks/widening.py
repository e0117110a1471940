"""Widening the pretrained MiniLM by k = 2, 3, 4: exactness and cost.

Run: python benchmarks/widening.py [--factors 2 3 4]
Prints one JSON object. For each k: the max-abs difference between the
original outputs and the widened outputs read back with `narrow_outputs`, on
8 real STS sentences padded to 32 tokens (sequence output at real tokens, the
pooled output), with and without symmetry-breaking noise (0.01); the time
`widen()` takes, and, as the peer measured in the same run, the time to build
the same wider `BertBackbone` from its config with random weights (what
training the wide model from scratch starts from): the ratio is what reusing
the small model costs on top of that.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.growth import narrow_outputs, widen  # noqa: E402
from keras_space.utils import minilm_path  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "Stocks fell sharply on Monday after the jobs report.",
    "ok",
    "The cat sat on the mat.",
    "Three dogs run through the snow in a park.",
    "What is the best way to learn a new language quickly?",
    "Obama signs the bill.",
    "A woman slices an onion.",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    path = minilm_path()
    small = keras_hub.models.BertBackbone.from_preset(path)
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=32)
    x = {k: np.asarray(v) for k, v in pre(SENTENCES).items()}
    real = x["padding_mask"].astype(bool)
    want = small.predict(x, verbose=0)
    result = {"command": "python benchmarks/widening.py " + " ".join(sys.argv[1:])}
    for k in args.factors:
        entry = {}
        for noise in (0.0, 0.01):
            start = time.perf_counter()
            big = widen(small, k, noise=noise, seed=0)
            seconds = time.perf_counter() - start
            got = narrow_outputs(big.predict(x, verbose=0), k)
            tag = "noise_0.01" if noise else "exact"
            entry[f"max_abs_diff_sequence_{tag}"] = float(
                np.abs(got["sequence_output"][real] - want["sequence_output"][real]).max()
            )
            entry[f"max_abs_diff_pooled_{tag}"] = float(np.abs(got["pooled_output"] - want["pooled_output"]).max())
            if not noise:
                entry["widen_seconds"] = seconds
        config = small.get_config()
        config.update(hidden_dim=384 * k, intermediate_dim=1536 * k)
        start = time.perf_counter()
        type(small).from_config(config)
        entry["build_random_wide_seconds"] = time.perf_counter() - start
        entry["widen_time_ratio_vs_random_build"] = entry["widen_seconds"] / entry["build_random_wide_seconds"]
        entry["parameters"] = int(big.count_params())
        result[f"k={k}"] = entry
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
