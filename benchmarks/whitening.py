"""WhiteningLayer.adapt streamed in batches against sklearn PCA(whiten=True).fit.

Run: python benchmarks/whitening.py [--rows 200000] [--dim 768] [--batch 4096]
Prints one JSON object. Ratios are ours / sklearn, measured in the same run on
the same float32 array; peak memory is what each call allocates beyond the
input array (tracemalloc, which numpy reports to).
"""

import argparse
import json
import os
import sys
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from keras_space.layers import WhiteningLayer  # noqa: E402


def measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak


def float32_route(x, batch):
    """The alternative adapt does not take: float32 Gram matrices of the shifted
    batches, accumulated in float64. Measured for its time and accuracy only."""
    shift = x[:batch].mean(axis=0, dtype="float64").astype("float32")
    sums, scatter = np.zeros(x.shape[1]), np.zeros((x.shape[1],) * 2)
    for start in range(0, len(x), batch):
        b = x[start : start + batch] - shift
        sums += b.sum(axis=0, dtype="float64")
        scatter += b.T @ b
    offset = sums / len(x)
    cov = (scatter - len(x) * np.outer(offset, offset)) / (len(x) - 1)
    return np.linalg.eigvalsh(cov)[::-1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=4096)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    mix = (rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)).astype("float32")
    x = np.empty((args.rows, args.dim), dtype="float32")
    for start in range(0, args.rows, 20_000):  # anisotropic, like sentence embeddings
        block = rng.normal(size=(min(20_000, args.rows - start), args.dim)).astype("float32")
        x[start : start + len(block)] = block @ mix + 3.0

    layer = WhiteningLayer()
    layer.build((None, args.dim))
    _, ours_s, ours_peak = measure(lambda: layer.adapt(x, batch_size=args.batch))
    pca, sk_s, sk_peak = measure(lambda: PCA(whiten=True).fit(x))
    f32, f32_s, _ = measure(lambda: float32_route(x, args.batch))
    full, full_s, full_peak = measure(lambda: PCA(whiten=True, svd_solver="full").fit(x))
    # exact reference: float64 covariance of the whole array, eigvalsh
    exact = np.linalg.eigvalsh(np.cov(x.astype("float64"), rowvar=False))[::-1]

    def rel_error(values, top):
        return float(np.max(np.abs(values[:top] - exact[:top]) / exact[:top]))
    print(
        json.dumps(
            {
                "rows": args.rows,
                "dim": args.dim,
                "batch_size": args.batch,
                "sklearn_version": sklearn.__version__,
                "sklearn_svd_solver": pca._fit_svd_solver,
                "ours_s": round(ours_s, 2),
                "sklearn_s": round(sk_s, 2),
                "time_ratio": round(ours_s / sk_s, 2),
                "ours_peak_mb": round(ours_peak / 2**20, 1),
                "sklearn_peak_mb": round(sk_peak / 2**20, 1),
                "peak_memory_ratio": round(ours_peak / sk_peak, 3),
                "sklearn_full_svd_s": round(full_s, 2),
                "sklearn_full_svd_peak_mb": round(full_peak / 2**20, 1),
                "time_ratio_vs_full_svd": round(ours_s / full_s, 3),
                "peak_memory_ratio_vs_full_svd": round(ours_peak / full_peak, 4),
                "sklearn_full_svd_max_rel_eigenvalue_error_all": rel_error(full.explained_variance_, args.dim),
                "eigenvalue_range": [float(exact[-1]), float(exact[0])],
                "ours_max_rel_eigenvalue_error_all": rel_error(layer.eigenvalues, args.dim),
                "sklearn_max_rel_eigenvalue_error_all": rel_error(pca.explained_variance_, args.dim),
                "ours_max_rel_eigenvalue_error_top256": rel_error(layer.eigenvalues, 256),
                "float32_route_time_ratio": round(f32_s / sk_s, 2),
                "float32_route_max_rel_eigenvalue_error_top256": rel_error(f32, 256),
                "float32_route_max_rel_eigenvalue_error_all": rel_error(f32, args.dim),
                "sklearn_max_rel_eigenvalue_error_top256": rel_error(pca.explained_variance_, 256),
            }
        )
    )


if __name__ == "__main__":
    main()
