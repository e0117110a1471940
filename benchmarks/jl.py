"""Johnson-Lindenstrauss toolkit against scikit-learn and exact search.

Run: python benchmarks/jl.py [--sts-dir ../shared/data/sts] [--sentences 6000]
Prints one JSON object. Ratios are ours / peer, measured in the same run.

1. RandomProjection (20000, 768) -> 256 vs sklearn GaussianRandomProjection.transform.
2. randomized_svd on a (4000, 2000) matrix, rank 50, vs sklearn.utils.extmath.randomized_svd
   (time and reconstruction error; both against numpy's exact truncated SVD error).
3. SimHash top-10 recall against exact cosine search on real sentence embeddings
   (pretrained MiniLM, mean pooling, STS sentences), by number of bits.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from _timing import best_time  # noqa: E402
from sklearn.random_projection import GaussianRandomProjection  # noqa: E402
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd  # noqa: E402

from keras_space.layers import RandomProjection, SimHash  # noqa: E402
from keras_space.ops import hamming_similarity, randomized_svd  # noqa: E402

DEFAULT_STS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")


def projection():
    x = np.random.default_rng(0).normal(size=(20000, 768)).astype("float32")
    layer = RandomProjection(256, seed=0)
    layer(x[:2])
    sk = GaussianRandomProjection(256, random_state=0).fit(x)
    import tensorflow as tf

    xt = tf.constant(x)
    from_numpy = best_time(lambda: np.asarray(layer(x)))
    tensor_in = best_time(lambda: np.asarray(layer(xt)))
    peer = best_time(lambda: sk.transform(x))
    return {
        "sklearn_ms": round(peer * 1e3, 1),
        "ours_numpy_in_ms": round(from_numpy * 1e3, 1),
        "ours_tensor_in_ms": round(tensor_in * 1e3, 1),
        "time_ratio_numpy_in": round(from_numpy / peer, 2),
        "time_ratio_tensor_in": round(tensor_in / peer, 2),
    }


def svd():
    rng = np.random.default_rng(0)
    m, n, true_rank, k = 4000, 2000, 100, 50
    u, _ = np.linalg.qr(rng.normal(size=(m, true_rank)))
    v, _ = np.linalg.qr(rng.normal(size=(n, true_rank)))
    a = ((u * np.geomspace(100, 1, true_rank)) @ v.T + 0.05 * rng.normal(size=(m, n))).astype("float32")

    def err(res):
        uu, ss, vvt = (np.asarray(t, dtype="float64") for t in res)
        return float(np.linalg.norm(a - (uu * ss) @ vvt))

    ours_res = randomized_svd(a, k, seed=0)
    sk_res = sk_randomized_svd(a, k, random_state=0)
    s_exact = np.linalg.svd(a.astype("float64"), compute_uv=False)
    best = float(np.sqrt(np.sum(s_exact[k:] ** 2)))
    ours = best_time(lambda: [np.asarray(t) for t in randomized_svd(a, k, seed=0)], repeats=3, warmup=1)
    peer = best_time(lambda: sk_randomized_svd(a, k, random_state=0), repeats=3, warmup=1)
    return {
        "ours_s": round(ours, 3),
        "sklearn_s": round(peer, 3),
        "time_ratio": round(ours / peer, 2),
        "error_ratio_vs_sklearn": round(err(ours_res) / err(sk_res), 5),
        "error_ratio_vs_exact_svd": round(err(ours_res) / best, 5),
    }


def sentence_embeddings(sts_dir, limit):
    import keras_hub

    from keras_space.datasets import load_sts
    from keras_space.models import encode_texts, sentence_encoder
    from keras_space.utils import minilm_path

    sentences = []
    for s1, s2, _ in load_sts(sts_dir).values():
        sentences.extend(s1)
        sentences.extend(s2)
    sentences = sorted(set(sentences))
    rng = np.random.default_rng(0)
    sentences = [sentences[i] for i in rng.permutation(len(sentences))[:limit]]
    path = minilm_path()
    encoder = sentence_encoder(keras_hub.models.BertBackbone.from_preset(path), "mean")
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=128)
    return encode_texts(encoder, pre, sentences)


def lsh_recall(emb, queries=500, k=10):
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    q = np.arange(queries)
    exact = emb[q] @ emb.T
    exact[q, q] = -np.inf
    truth = np.argsort(-exact, axis=1)[:, :k]
    out = {}
    for bits in (64, 128, 256, 512, 1024):
        codes = np.asarray(SimHash(bits, seed=0)(emb))[:, 0]
        sim = np.array(hamming_similarity(codes[q], codes, pairwise=True))
        sim[q, q] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")
        hit = np.mean([len(set(truth[i]) & set(top[i, :k])) / k for i in range(queries)])
        # practical LSH: 100 Hamming candidates re-ranked by exact cosine
        rerank = []
        for i in range(queries):
            cand = top[i, :100]
            best = cand[np.argsort(-exact[i, cand])[:k]]
            rerank.append(len(set(truth[i]) & set(best)) / k)
        out[str(bits)] = {"recall_at_10": round(float(hit), 3), "recall_at_10_rerank_100": round(float(np.mean(rerank)), 3)}
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sts-dir", default=DEFAULT_STS)
    parser.add_argument("--sentences", type=int, default=6000)
    args = parser.parse_args()
    result = {"projection_20000x768_to_256_vs_sklearn": projection(), "randomized_svd_4000x2000_rank50_vs_sklearn": svd()}
    if os.path.isdir(args.sts_dir):
        emb = sentence_embeddings(args.sts_dir, args.sentences)
        result["simhash_top10_recall_minilm_sts"] = {"sentences": len(emb), "queries": 500, "by_bits": lsh_recall(emb)}
    else:
        result["simhash_top10_recall_minilm_sts"] = f"skipped: no STS data at {args.sts_dir}"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
