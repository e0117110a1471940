"""Johnson-Lindenstrauss dimension bounds and Hamming similarity of bit codes.

The JL lemma: N points in R^m keep every pairwise squared distance within
(1 +- eps) under v -> A v, A in R^{n x m} with i.i.d. N(0, 1/n) entries, once

    n > 24 log N / eps^2                      (bound="su", the article's)
    n >= 4 log N / (eps^2 / 2 - eps^3 / 3)    (bound="sklearn", Dasgupta-Gupta)

References:
    - Su Jianlin, "The amazing Johnson-Lindenstrauss lemma: theory"
      https://kexue.fm/archives/8679
    - Dasgupta & Gupta, "An elementary proof of a theorem of Johnson and
      Lindenstrauss", https://doi.org/10.1002/rsa.10073
"""


import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

BOUNDS = ("su", "sklearn")
EMBEDDING_RULE = 8.33  # n > 8.33 log N: the rule of thumb for embedding/head sizes


def _check_n(n_samples, name="n_samples"):
    try:
        n = np.asarray(n_samples, dtype="float64")
    except (TypeError, ValueError):
        raise validation.ArgumentTypeError(
            f"`{name}` must be a number (or array of numbers) >= 1. Received: {name}={n_samples!r}"
        ) from None
    if n.size == 0 or np.any(~np.isfinite(n)) or np.any(n < 1):
        raise ValueError(f"`{name}` must be >= 1. Received: {name}={n_samples!r}")
    return n


def _check_bound(bound):
    validation.choice("bound", bound, BOUNDS)


def _scalar_or_array(x):
    return x.item() if np.ndim(x) == 0 else x


@keras_space_export("keras_space.ops.jl_min_dim")
def jl_min_dim(n_samples, eps=0.1, bound="su"):
    """Smallest projection size that keeps N points' distances within (1 +- eps).

    Args:
        n_samples: number of points N (scalar or array), >= 1.
        eps: distortion in (0, 1) (scalar or array; broadcast with n_samples).
            Defaults to `0.1`.
        bound: "su" (n > 24 log N / eps^2, the smallest such integer) or
            "sklearn" (identical to `sklearn.random_projection.
            johnson_lindenstrauss_min_dim`, which truncates
            4 log N / (eps^2/2 - eps^3/3)). Defaults to `"su"`.

    Returns:
        An int (scalar inputs) or an int64 array.

    Example:

    >>> from keras_space.ops import jl_min_dim
    >>> jl_min_dim(10_000, eps=0.2)
    5527
    >>> jl_min_dim([1e4, 1e6], eps=0.1, bound="sklearn")
    array([ 7894, 11841])
    """
    _check_bound(bound)
    n = _check_n(n_samples)
    e = np.asarray(eps, dtype="float64")
    if e.size == 0 or np.any(~(e > 0)) or np.any(~(e < 1)):
        raise ValueError(f"`eps` must be in (0, 1). Received: eps={eps!r}")
    if bound == "su":
        dim = np.floor(24.0 * np.log(n) / e**2).astype("int64") + 1
    else:
        dim = (4.0 * np.log(n) / (e**2 / 2.0 - e**3 / 3.0)).astype("int64")
    return _scalar_or_array(dim)


@keras_space_export("keras_space.ops.jl_epsilon")
def jl_epsilon(n_samples, n_components, bound="su"):
    """The distortion eps that the JL bound guarantees for N points in n dims.

    The inverse of `jl_min_dim`: "su" gives sqrt(24 log N / n); "sklearn"
    solves eps^2/2 - eps^3/3 = 4 log N / n on (0, 1). A value >= 1 ("su") or
    inf ("sklearn": no root below 1) means the bound guarantees nothing at
    that size.

    Example:

    >>> from keras_space.ops import jl_epsilon
    >>> round(jl_epsilon(10_000, 5527), 4)
    0.2
    """
    _check_bound(bound)
    n = _check_n(n_samples)
    k = _check_n(n_components, "n_components")
    target = np.broadcast_to(np.log(n), np.broadcast_shapes(n.shape, k.shape))
    if bound == "su":
        eps = np.sqrt(24.0 * target / k)
    else:
        rhs = 4.0 * target / k
        lo = np.zeros_like(rhs)
        hi = np.ones_like(rhs)
        for _ in range(80):  # bisection: h(e) = e^2/2 - e^3/3 increases on (0, 1)
            mid = 0.5 * (lo + hi)
            below = mid**2 / 2.0 - mid**3 / 3.0 < rhs
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        eps = np.where(rhs < 1.0 / 6.0, hi, np.inf)
    return _scalar_or_array(eps)


@keras_space_export("keras_space.ops.min_embedding_dim")
def min_embedding_dim(n):
    """The rule of thumb n > 8.33 log N for embedding and attention-head sizes.

    Returns the smallest integer above 8.33 log N: 52 for sequences of 512,
    so 64-dimensional heads are enough.

    Example:

    >>> from keras_space.ops import min_embedding_dim
    >>> min_embedding_dim(512)
    52
    """
    n = _check_n(n, "n")
    return _scalar_or_array(np.floor(EMBEDDING_RULE * np.log(n)).astype("int64") + 1)


@keras_space_export("keras_space.ops.hamming_similarity")
def hamming_similarity(a, b, pairwise=False):
    """Fraction of equal bits between 0/1 codes along the last axis.

    For sign-random-projection codes, 1 - similarity estimates theta / pi, so
    cos(pi * (1 - similarity)) estimates the cosine of the original vectors.

    Args:
        a: a 0/1 (or boolean) tensor.
        b: a 0/1 (or boolean) tensor whose last axis has the length of `a`'s.
        pairwise: if True, a is (q, bits) and b is (n, bits) and the result is
            the (q, n) matrix of similarities (one matmul); otherwise a and b
            broadcast elementwise. Defaults to `False`.

    Example:

    >>> import numpy as np
    >>> from keras_space.ops import hamming_similarity
    >>> float(hamming_similarity(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])))
    0.5
    """
    pairwise = validation.strict_bool("pairwise", pairwise)
    a = validation.all_bits("a", ops.cast(a, "float32"))
    b = validation.all_bits("b", ops.cast(b, "float32"))
    bits = a.shape[-1]
    if bits is None or b.shape[-1] != bits:
        raise ValueError(
            f"`a` and `b` need the same number of bits. Received shapes {a.shape} and {b.shape}"
        )
    sa, sb = 2.0 * a - 1.0, 2.0 * b - 1.0
    if pairwise:
        if len(a.shape) != 2 or len(b.shape) != 2:
            raise ValueError(
                f"pairwise=True takes 2-D codes. Received shapes {a.shape} and {b.shape}"
            )
        agree = ops.matmul(sa, ops.transpose(sb))
    else:
        agree = ops.sum(sa * sb, axis=-1)
    return 0.5 * (agree / float(bits) + 1.0)

