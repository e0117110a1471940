"""SimHash: bit disagreement against theta / pi, packing, contract, errors."""

import numpy as np
import pytest

from keras_space.layers import SimHash
from keras_space.ops import hamming_similarity
from keras_space.testing import run_layer_contract
from tests.backend import compiled, runtime_errors

pytestmark = pytest.mark.all_backends


def pair_at_angle(theta, dim, rng):
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    w = rng.normal(size=dim)
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    return u, np.cos(theta) * u + np.sin(theta) * w


@pytest.mark.parametrize("theta", [0.1, 0.5, 1.0, np.pi / 2, 2.5, 3.0])
def test_bit_disagreement_rate_is_theta_over_pi(theta):
    rng = np.random.default_rng(0)
    u, v = pair_at_angle(theta, 64, rng)
    bits = 8 * 1024
    codes = np.asarray(SimHash(1024, num_tables=8, seed=1)(np.stack([u, v]).astype("float32")))
    assert codes.shape == (2, 8, 1024) and codes.dtype == np.int32
    rate = np.mean(codes[0] != codes[1])
    p = theta / np.pi
    se = np.sqrt(p * (1 - p) / bits)
    assert abs(rate - p) < 3 * se, (rate, p, se)
    sim = float(hamming_similarity(codes[0].ravel(), codes[1].ravel()))
    np.testing.assert_allclose(sim, 1 - rate, atol=1e-6)


def test_packed_codes_are_the_bits_in_binary():
    x = np.random.default_rng(0).normal(size=(5, 16)).astype("float32")
    bits = np.asarray(SimHash(12, num_tables=3, seed=2)(x))
    packed = np.asarray(SimHash(12, num_tables=3, output_mode="packed", seed=2)(x))
    assert packed.shape == (5, 3) and packed.dtype == np.int64
    np.testing.assert_array_equal(packed, (bits * (2 ** np.arange(12))).sum(-1))


def test_layer_contract_bits_and_packed():
    x = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
    run_layer_contract(
        SimHash,
        {"num_bits": 16, "num_tables": 2, "seed": 0},
        input_data=x,
        expected_output_shape=(4, 2, 16),
        expected_output_dtype="int32",
        mixed_precision_output_dtype="int32",
        run_fit=False,
    )
    run_layer_contract(
        SimHash,
        {"num_bits": 16, "num_tables": 2, "output_mode": "packed", "seed": 0},
        input_data=x,
        expected_output_shape=(4, 2),
        expected_output_dtype="int64",
        mixed_precision_output_dtype="int64",
        run_fit=False,
        run_saved_model=False,  # the same class's export ran just above
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_bits": 0}, "num_bits=0"),
        ({"num_bits": 8, "num_tables": 0}, "num_tables=0"),
        ({"num_bits": 8, "output_mode": "hex"}, "output_mode='hex'"),
        ({"num_bits": 64, "output_mode": "packed"}, "num_bits=64"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimHash(**kwargs)


def test_non_finite_inputs_are_refused_not_hashed():
    layer = SimHash(num_bits=8, seed=0)
    x = np.ones((3, 4), "float32")
    layer(x)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="`inputs` must hold finite values.*1 entries"):
        layer(x)
    with pytest.raises(runtime_errors(), match="finite values"):
        compiled(layer)(x)


def test_hamming_similarity_refuses_values_that_are_not_bits():
    code = np.array([2, -1, 0, 1])
    with pytest.raises(ValueError, match="`a` must hold 0/1 bits only.*2 entries"):
        hamming_similarity(code, code)
