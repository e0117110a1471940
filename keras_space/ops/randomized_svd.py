"""Halko-Martinsson-Tropp randomized SVD with keras.ops (TensorFlow backend first)."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


def _orthonormal(x):
    q, _ = ops.qr(x, mode="reduced")
    return q


@keras_space_export("keras_space.ops.randomized_svd")
def randomized_svd(matrix, rank, n_oversamples=10, n_iter="auto", seed=None):
    """Truncated SVD by random range finding (Halko et al., Algorithm 4.4).

    Sketches the range of A with a Gaussian test matrix of rank +
    n_oversamples columns, runs `n_iter` power iterations with QR
    re-orthonormalisation after every product, and takes the exact SVD of the
    small matrix Q^T A. Wide matrices are handled through their transpose.
    Signs are fixed so that each column of U has its largest entry positive.

    Args:
        matrix: a 2-D float32 or float64 tensor or array (m, n).
        rank: number of singular triplets k, 1 <= k <= min(m, n).
        n_oversamples: extra sketch columns (10 is Halko's advice). Defaults to `10`.
        n_iter: power iterations, or "auto" (7 if k < 0.1 min(m, n), else 4,
            as scikit-learn). Defaults to `"auto"`.
        seed: int seed of the Gaussian test matrix (None: random). Defaults to `None`.

    Returns:
        (U, S, Vt) with shapes (m, k), (k,), (k, n), in the input's dtype
        (float32 unless the input is float64).

    Example:

    >>> import numpy as np
    >>> from keras_space.ops import randomized_svd
    >>> a = np.random.default_rng(0).normal(size=(300, 80))
    >>> u, s, vt = randomized_svd(a, rank=10, seed=0)
    >>> tuple(u.shape), tuple(s.shape), tuple(vt.shape)
    ((300, 10), (10,), (10, 80))

    References:
        - Halko, Martinsson & Tropp, "Finding structure with randomness",
          https://arxiv.org/abs/0909.4061
    """
    a = ops.convert_to_tensor(matrix)
    dtype = keras.backend.standardize_dtype(a.dtype)
    if dtype not in ("float32", "float64"):
        dtype = "float32"
        a = ops.cast(a, dtype)
    if len(a.shape) != 2:
        raise ValueError(f"`matrix` must be 2-D. Received shape {a.shape}")
    m, n = a.shape
    rank = validation.positive_int("rank", rank)
    if rank > min(m, n):
        raise ValueError(
            f"`rank` must be an int in [1, min(m, n) = {min(m, n)}]. Received: rank={rank!r}"
        )
    n_oversamples = validation.non_negative_int("n_oversamples", n_oversamples)
    if n_iter == "auto":
        n_iter = 7 if rank < 0.1 * min(m, n) else 4
    n_iter = validation.non_negative_int("n_iter", n_iter)
    transpose = m < n
    if transpose:
        a = ops.transpose(a)
        m, n = n, m
    width = min(rank + n_oversamples, n)
    omega = keras.random.normal((n, width), dtype=dtype, seed=seed)
    q = _orthonormal(ops.matmul(a, omega))
    at = ops.transpose(a)
    for _ in range(n_iter):
        q = _orthonormal(ops.matmul(at, q))
        q = _orthonormal(ops.matmul(a, q))
    b = ops.matmul(ops.transpose(q), a)
    ub, s, vt = ops.svd(b, full_matrices=False)
    u = ops.matmul(q, ub)[:, :rank]
    s = s[:rank]
    vt = vt[:rank]
    # svd_flip: largest-magnitude entry of each column of U positive.
    idx = ops.argmax(ops.abs(u), axis=0)
    signs = ops.sign(ops.take_along_axis(u, idx[None, :], axis=0))[0]
    signs = ops.where(signs == 0, ops.ones_like(signs), signs)
    u = u * signs[None, :]
    vt = vt * signs[:, None]
    if transpose:
        return ops.transpose(vt), s, ops.transpose(u)
    return u, s, vt
