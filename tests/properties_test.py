"""Property-based checks (hypothesis) of the numeric promises README makes.

- padded content never changes an output at a real position (every token mixer
  and MaskedMeanPooling), whatever it holds, for any mask;
- finite inputs give finite outputs, over the whole documented range
  (smooth activations: |x| up to 1e300 in float64, sigma over SIGMA_RANGE);
- float64 inputs give float64-accurate results where README says so (the
  Gaussian smooth ReLU and sign against scipy; `VonMisesFisher.mean_direction`
  against numpy at any magnitude).

Derandomized, so CI sees the same examples on every run.
"""

import keras
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

from keras_space import activations as A
from keras_space import layers as L

pytestmark = pytest.mark.all_backends

SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
B, S, C = 2, 5, 4

MASKED_LAYERS = {
    "MLPMixerBlock": lambda: L.MLPMixerBlock(tokens_mlp_dim=4, channels_mlp_dim=8),
    "GMLPBlock_tiny_attention": lambda: L.GMLPBlock(ffn_dim=8, tiny_attention_dim=4),
    "FNetBlock": lambda: L.FNetBlock(ffn_dim=8),
    "ResMLPBlock": lambda: L.ResMLPBlock(channels_mlp_dim=8),
    "ExternalAttention": lambda: L.ExternalAttention(memory_units=4),
    "SynthesizerAttention_dense": lambda: L.SynthesizerAttention(2, mode="dense"),
    "SynthesizerAttention_random": lambda: L.SynthesizerAttention(2, mode="random"),
    "MaskedMeanPooling": L.MaskedMeanPooling,
}
ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -3e38]),
)


@pytest.mark.parametrize("name", sorted(MASKED_LAYERS))
def test_padded_content_never_changes_real_positions(name):
    layer = MASKED_LAYERS[name]()
    x = np.random.default_rng(0).normal(size=(B, S, C)).astype("float32")
    layer(x)

    @SETTINGS
    @given(
        mask=hnp.arrays(bool, (B, S)),
        garbage=hnp.arrays("float32", (B, S, C), elements=ANY_FLOAT),
    )
    def check(mask, garbage):
        clean = np.where(mask[..., None], x, 0.0).astype("float32")
        dirty = np.where(mask[..., None], x, garbage).astype("float32")
        expected = keras.ops.convert_to_numpy(layer(clean, padding_mask=mask))
        got = keras.ops.convert_to_numpy(layer(dirty, padding_mask=mask))
        if got.ndim == 3:  # sequence outputs: compare the real positions
            expected, got = expected[mask], got[mask]
        np.testing.assert_array_equal(got, expected)
        assert np.all(np.isfinite(got))

    check()


FINITE64 = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, width=64)
SIGMA = st.floats(min_value=A.SIGMA_RANGE[0], max_value=A.SIGMA_RANGE[1])


@SETTINGS
@given(x=hnp.arrays("float64", 16, elements=FINITE64), sigma=SIGMA)
def test_finite_inputs_give_finite_outputs_within_the_exact_bounds(x, sigma):
    for kernel in ("gaussian", "logistic"):
        relu = keras.ops.convert_to_numpy(A.smooth_relu(x, sigma, kernel))
        # Convolving a convex function with a kernel of mean 0 can only raise it
        # (Jensen), by at most its value at the kink: sigma * E|Z| / 2.
        bump = sigma * (1 / np.sqrt(2 * np.pi) if kernel == "gaussian" else np.log(2))
        assert np.all(np.isfinite(relu))
        assert np.all(relu >= np.maximum(x, 0) * (1 - 1e-15))
        assert np.all(relu <= np.maximum(x, 0) * (1 + 1e-15) + bump * (1 + 1e-12))
        for fn in (A.smooth_abs, A.smooth_sign, A.smooth_step):
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(fn(x, sigma, kernel))))
        leaky = keras.ops.convert_to_numpy(A.smooth_leaky_relu(x, 0.2, sigma, kernel))
        assert np.all(np.isfinite(leaky))


@mpmath.workdps(40)
def _gaussian_relu_reference(x, sigma):
    """x Phi(x / sigma) + sigma phi(x / sigma) in 40-digit arithmetic."""
    u = mpmath.mpf(x) / mpmath.mpf(sigma)
    return float(mpmath.mpf(sigma) * (u * mpmath.ncdf(u) + mpmath.npdf(u)))


@SETTINGS
@given(
    x=hnp.arrays("float64", 16, elements=st.floats(-50, 50)),
    sigma=st.floats(min_value=1e-3, max_value=1e3),
)
def test_float64_gaussian_closed_forms_are_float64_accurate(x, sigma):
    u = x / sigma
    relu = np.array([_gaussian_relu_reference(v, sigma) for v in x])
    # Error analysis (eps = 2**-52). z = -x / (sqrt(2) sigma) is rounded 3 times, so
    # erfc(z) and exp(-z^2) carry relative errors up to 3 u^2 eps (their logarithmic
    # derivatives are ~2z), plus ~1 ulp of their own.
    # - u <= -3: sigma phi(u) c / (t + c), a continued fraction of positive terms (a few
    #   ulps): (3 u^2 + 20) eps.
    # - -3 < u < 0: x Phi(u) + sigma phi(u) cancels; the terms' errors are amplified by
    #   K = (t Phi(-t) + phi(t)) / (phi(t) - t Phi(-t)), t = -u (K <= 23 at t = 3):
    #   K (3 u^2 + 4) eps.  u >= 0: both terms positive, K = 1.
    # Below u = -38 the value is sub-normal: the absolute 1e-300.
    t = np.maximum(-u, 0.0)
    a, b = t * special.ndtr(-t), np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
    conditioning = np.where(u < 0, (a + b) / np.where(b > a, b - a, 1.0), 1.0)
    eps = np.finfo("float64").eps
    rtol = np.where(u <= -3, (3 * u**2 + 20) * eps, conditioning * (3 * u**2 + 4) * eps)
    layer = L.SmoothReLU(sigma=sigma, dtype="float64")  # the layer keeps sigma in float64
    for got in (A.smooth_relu(x, sigma), layer(x)):
        error = np.abs(keras.ops.convert_to_numpy(got) - relu)
        assert np.all(error <= rtol * np.abs(relu) + 1e-300), np.max(error / np.abs(relu))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(A.smooth_sign(x, sigma)),
        special.erf(u / np.sqrt(2)), rtol=1e-13, atol=1e-16,
    )


def test_mean_direction_is_the_unit_vector_at_any_magnitude():
    layer = L.VonMisesFisher(kappa=10.0, seed=0)
    layer.build((None, 6))

    @SETTINGS
    @given(
        direction=hnp.arrays("float64", 6, elements=st.floats(-1, 1)).filter(np.any),
        exponent=st.integers(-300, 300),
    )
    def check(direction, exponent):
        x = direction * 10.0**exponent
        if not np.any(x):  # underflowed to the zero vector: e_1 (README)
            return
        got = keras.ops.convert_to_numpy(layer.mean_direction(keras.ops.convert_to_tensor(x[None])))
        scaled = x / np.max(np.abs(x))
        np.testing.assert_allclose(got[0], scaled / np.linalg.norm(scaled), rtol=1e-6, atol=1e-7)

    check()
