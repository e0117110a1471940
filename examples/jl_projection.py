"""Johnson-Lindenstrauss in practice: distortion histograms and LSH recall against bits.

Run: python examples/jl_projection.py [--out jl_projection.png]

Left: 1,000 points in R^3000 projected to n dimensions; the histogram of
||Ax - Ay||^2 / ||x - y||^2 over all 499,500 pairs, with the eps that the JL
bound (24 log N / eps^2) guarantees for each n. Right: SimHash top-10 recall
against exact cosine search on clustered data, by number of bits.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from scipy.spatial.distance import pdist  # noqa: E402

from keras_space.layers import RandomProjection, SimHash  # noqa: E402
from keras_space.ops import hamming_similarity, jl_epsilon, jl_min_dim  # noqa: E402


def distortions(x, dims):
    base = pdist(x.astype("float64"), "sqeuclidean")
    out = {}
    for n in dims:
        y = np.asarray(RandomProjection(n, seed=0)(x), dtype="float64")
        out[n] = pdist(y, "sqeuclidean") / base
    return out


def lsh_recall(points, bits_list, queries=300, k=10):
    x = points / np.linalg.norm(points, axis=1, keepdims=True)
    q = np.arange(queries)
    exact = x[q] @ x.T
    exact[q, q] = -np.inf
    truth = np.argsort(-exact, axis=1)[:, :k]
    recalls = {}
    for bits in bits_list:
        codes = np.asarray(SimHash(bits, seed=0)(x))[:, 0]
        sim = np.array(hamming_similarity(codes[q], codes, pairwise=True))
        sim[q, q] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        recalls[bits] = float(np.mean([len(set(t) & set(p)) / k for t, p in zip(truth, top, strict=True)]))
    return recalls


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="jl_projection.png")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3000)).astype("float32")
    dims = [64, 256, jl_min_dim(1000, 0.5), 1024]
    dist = distortions(x, dims)
    print("n      guaranteed eps   observed min..max of squared-distance ratio")
    for n, r in dist.items():
        print(f"{n:<6} {jl_epsilon(1000, n):>14.3f}   {r.min():.3f} .. {r.max():.3f}")

    centres = rng.normal(size=(50, 128))
    points = np.repeat(centres, 60, axis=0) + 0.6 * rng.normal(size=(3000, 128))
    bits_list = [16, 32, 64, 128, 256, 512, 1024]
    recalls = lsh_recall(points.astype("float32"), bits_list)
    print("bits   SimHash top-10 recall (vs exact cosine)")
    for b, r in recalls.items():
        print(f"{b:<6} {r:.3f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for n, r in dist.items():
        a1.hist(r, bins=200, histtype="step", density=True, label=f"n={n} (JL eps={jl_epsilon(1000, n):.2f})")
    a1.set_xlabel("||Ax-Ay||^2 / ||x-y||^2")
    a1.set_title("1,000 points in R^3000, all pairs")
    a1.legend()
    a2.semilogx(bits_list, [recalls[b] for b in bits_list], "o-", base=2)
    a2.set_xlabel("bits")
    a2.set_ylabel("top-10 recall")
    a2.set_title("SimHash vs exact cosine search")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
