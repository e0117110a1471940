"""randomized_svd against sklearn's and numpy's exact SVD."""

import numpy as np
import pytest
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

from keras_space.ops import randomized_svd

pytestmark = pytest.mark.all_backends


def low_rank_plus_noise(m, n, rank, noise, seed=0):
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(m, rank)))
    v, _ = np.linalg.qr(rng.normal(size=(n, rank)))
    s = np.geomspace(100, 1, rank)
    return (u * s) @ v.T + noise * rng.normal(size=(m, n))


def error(a, u, s, vt):
    return np.linalg.norm(a - (np.asarray(u) * np.asarray(s)) @ np.asarray(vt))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(600, 300), (300, 600)])
def test_reconstruction_matches_sklearn_and_the_optimum(dtype, shape):
    a = low_rank_plus_noise(*shape, rank=40, noise=0.1).astype(dtype)
    k = 20
    u, s, vt = randomized_svd(a, k, seed=0)
    assert str(np.asarray(u).dtype) == dtype
    assert np.asarray(u).shape == (shape[0], k) and np.asarray(vt).shape == (k, shape[1])
    ours = error(a, u, s, vt)
    sk = error(a, *sk_randomized_svd(a, k, random_state=0))
    uu, ss, vvt = np.linalg.svd(a.astype("float64"), full_matrices=False)
    best = error(a, uu[:, :k], ss[:k], vvt[:k])
    assert ours <= 1.05 * sk
    assert ours <= 1.05 * best
    np.testing.assert_allclose(np.asarray(s), ss[:k], rtol=1e-3 if dtype == "float32" else 1e-6)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(np.asarray(u).T @ np.asarray(u), np.eye(k), atol=tol)
    np.testing.assert_allclose(np.asarray(vt) @ np.asarray(vt).T, np.eye(k), atol=tol)


def test_power_iterations_help_on_a_flat_spectrum():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 300)) @ np.diag(np.linspace(1, 0.5, 300)) @ rng.normal(size=(300, 300))
    best_s = np.linalg.svd(a, compute_uv=False)
    best = np.sqrt(np.sum(best_s[10:] ** 2))
    e0 = error(a, *randomized_svd(a, 10, n_iter=0, seed=0))
    e7 = error(a, *randomized_svd(a, 10, n_iter=7, seed=0))
    assert best <= e7 < e0


def test_seed_is_deterministic_and_signs_fixed():
    a = low_rank_plus_noise(200, 100, 10, 0.01)
    u1, s1, v1 = randomized_svd(a, 5, seed=3)
    u2, s2, v2 = randomized_svd(a, 5, seed=3)
    np.testing.assert_array_equal(u1, u2)
    idx = np.argmax(np.abs(np.asarray(u1)), axis=0)
    assert np.all(np.asarray(u1)[idx, np.arange(5)] > 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "rank=0"),
        ({"rank": 51}, "rank=51"),
        ({"rank": 5, "n_iter": -1}, "n_iter=-1"),
        ({"rank": 5, "n_oversamples": -2}, "n_oversamples=-2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        randomized_svd(np.ones((80, 50)), **kwargs)
    with pytest.raises(ValueError, match="2-D"):
        randomized_svd(np.ones((2, 3, 4)), 1)
