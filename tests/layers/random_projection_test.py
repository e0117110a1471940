"""RandomProjection: JL distortion, moments of the matrix, contract, errors."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from keras_space.layers import RandomProjection
from keras_space.ops import jl_min_dim
from keras_space.testing import run_layer_contract

pytestmark = pytest.mark.all_backends


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "orthogonal"])
def test_pairwise_distortion_within_eps(kind):
    """1,000 points projected to jl_min_dim(1000, eps) dims: every squared distance within 1 +- eps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3000)).astype("float32")
    eps = 0.5
    units = jl_min_dim(1000, eps)
    assert units == 664
    y = np.asarray(RandomProjection(units, kind=kind, seed=1)(x), dtype="float64")
    ratio = pdist(y, "sqeuclidean") / pdist(x.astype("float64"), "sqeuclidean")
    assert ratio.size == 499500
    assert 1 - eps < ratio.min() and ratio.max() < 1 + eps
    # concentration: the spread is what the N(0, 1/n) theory predicts (var 2/n)
    assert abs(ratio.mean() - 1.0) < 0.02
    assert ratio.std() < 2.0 * np.sqrt(2.0 / units)


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_matrix_moments(kind):
    layer = RandomProjection(256, kind=kind, seed=0)
    layer.build((None, 1024))
    k = np.asarray(layer.kernel)
    np.testing.assert_allclose(np.mean(k**2), 1 / 256, rtol=0.02)
    if kind == "sparse":
        density = 1 / 32
        np.testing.assert_allclose(np.mean(k != 0), density, rtol=0.05)
        assert np.allclose(np.abs(k[k != 0]), 1 / np.sqrt(density * 256))


def test_orthogonal_preserves_norms_exactly_when_widening():
    x = np.random.default_rng(0).normal(size=(10, 64)).astype("float32")
    y = RandomProjection(128, kind="orthogonal", seed=0)(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)


def test_seed_gives_the_same_matrix():
    a = RandomProjection(16, seed=7)
    b = RandomProjection(16, seed=7)
    x = np.ones((2, 32), "float32")
    np.testing.assert_array_equal(a(x), b(x))


@pytest.mark.parametrize("kind", ["gaussian", "sparse", "orthogonal"])
def test_layer_contract(kind, saved_model_once):
    x = np.random.default_rng(0).normal(size=(4, 3, 20)).astype("float32")
    run_layer_contract(
        RandomProjection,
        {"units": 8, "kind": kind, "seed": 3},
        input_data=x,
        expected_output_shape=(4, 3, 8),
        run_saved_model=saved_model_once,
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": 0}, "units=0"),
        ({"units": 4, "kind": "rademacher"}, "kind='rademacher'"),
        ({"units": 4, "kind": "sparse", "density": 1.5}, "density=1.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomProjection(**kwargs)
