"""JL bounds against sklearn and the formulas; hamming similarity against numpy."""

import math

import numpy as np
import pytest
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from keras_space.ops import (
    hamming_similarity,
    jl_epsilon,
    jl_min_dim,
    min_embedding_dim,
)

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

N = np.array([2, 10, 1000, 1e4, 1e6, 1e9])
EPS = np.array([0.01, 0.05, 0.1, 0.3, 0.5, 0.9, 0.99])


def test_sklearn_bound_equals_sklearn():
    for eps in EPS:
        np.testing.assert_array_equal(
            jl_min_dim(N, eps, bound="sklearn"), johnson_lindenstrauss_min_dim(N, eps=eps)
        )
    assert jl_min_dim(1e6, 0.5, bound="sklearn") == johnson_lindenstrauss_min_dim(1e6, eps=0.5)
    assert isinstance(jl_min_dim(1e6, 0.5, bound="sklearn"), int)


def test_su_bound_is_the_smallest_integer_above_24_log_n_over_eps2():
    dims = jl_min_dim(N[:, None], EPS[None, :])
    bound = 24 * np.log(N[:, None]) / EPS[None, :] ** 2
    assert dims.shape == (N.size, EPS.size)
    assert np.all(dims > bound) and np.all(dims - 1 <= bound)
    assert jl_min_dim(10_000, 0.2) == 5527


def test_epsilon_inverts_min_dim():
    for bound in ("su", "sklearn"):
        for n in (100, 1e4, 1e6):
            for k in (64, 256, 2000, 20000):
                eps = jl_epsilon(n, k, bound=bound)
                if np.isfinite(eps) and eps < 1:
                    assert jl_min_dim(n, eps * (1 + 1e-9), bound=bound) <= k
                    assert jl_min_dim(n, eps * (1 - 1e-6), bound=bound) >= k
    assert jl_epsilon(1e6, 10, bound="sklearn") == np.inf  # nothing guaranteed
    np.testing.assert_allclose(jl_epsilon([1e4, 1e6], 5000), np.sqrt(24 * np.log([1e4, 1e6]) / 5000))


def test_min_embedding_dim():
    assert min_embedding_dim(512) == 52  # 64-dim heads suffice for sequences of 512
    assert min_embedding_dim(512) > 8.33 * math.log(512) > min_embedding_dim(512) - 1
    np.testing.assert_array_equal(min_embedding_dim([512, 4096]), [52, 70])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: jl_min_dim(100, 0.0), "eps=0.0"),
        (lambda: jl_min_dim(100, 1.0), "eps=1.0"),
        (lambda: jl_min_dim(100, [0.1, 1.5]), r"eps=\[0.1, 1.5\]"),
        (lambda: jl_min_dim(0, 0.1), "n_samples=0"),
        (lambda: jl_min_dim(100, 0.1, bound="tight"), "bound='tight'"),
        (lambda: jl_epsilon(100, 0), "n_components=0"),
        (lambda: min_embedding_dim(0.5), "n=0.5"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_hamming_similarity_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, size=(7, 64))
    b = rng.integers(0, 2, size=(11, 64))
    want = (a[:, None, :] == b[None, :, :]).mean(-1)
    np.testing.assert_allclose(hamming_similarity(a, b, pairwise=True), want, atol=1e-6)
    np.testing.assert_allclose(hamming_similarity(a, b[:7]), (a == b[:7]).mean(-1), atol=1e-6)
    with pytest.raises(ValueError, match="same number of bits"):
        hamming_similarity(a, b[:, :32])
