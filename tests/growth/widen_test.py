"""widen(): the widened model computes the original function (the original is the reference)."""

import re

import keras
import numpy as np
import pytest

from keras_space.growth import narrow_outputs, widen, widen_inputs

from conftest import load_minilm

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)


def randomize(model, scale=0.5):
    for v in model.weights:
        v.assign(RNG.normal(scale=scale, size=v.shape).astype("float32"))


def plain_model():
    ids = keras.Input((7,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(ids)
    h = keras.layers.LayerNormalization(epsilon=1e-3)(x)
    a = keras.layers.MultiHeadAttention(2, 4)(h, h)
    x = keras.layers.Add()([x, a])
    f = keras.layers.Dense(16, activation="gelu")(keras.layers.LayerNormalization()(x))
    x = keras.layers.Add()([x, keras.layers.Dropout(0.1)(keras.layers.Dense(8)(f))])
    x = keras.layers.Add()([x, keras.layers.Dense(8, activation="relu")(x)])
    model = keras.Model(ids, keras.layers.LayerNormalization()(x))
    randomize(model)
    return model


def encoder_stack(normalize_first, activation="gelu"):
    import keras_hub

    inp = keras.Input((6, 8))
    y = inp
    for _ in range(2):
        y = keras_hub.layers.TransformerEncoder(
            16, 2, normalize_first=normalize_first, activation=activation, layer_norm_epsilon=1e-3
        )(y)
    model = keras.Model(inp, y)
    randomize(model)
    return model


@pytest.mark.parametrize("k, noise", [(2, 0.0), (3, 0.1)])
def test_plain_model(k, noise, tmp_path):
    model = plain_model()
    before = [np.array(v) for v in model.weights]
    ids = RNG.integers(0, 50, size=(3, 7))
    want = model.predict(ids, verbose=0)
    big = widen(model, k, noise=noise, seed=0)
    assert big.output.shape == (None, 7, 8 * k)
    got = big.predict(ids, verbose=0)
    np.testing.assert_allclose(narrow_outputs(got, k), want, atol=1e-5)
    for v, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(v), b)  # the original is untouched
    if noise:
        last_dense = [layer for layer in big.layers if isinstance(layer, keras.layers.Dense)][-1]
        copies = np.asarray(last_dense.kernel).reshape(8, k, 8 * k)  # rows reading each unit's copies
        assert not np.allclose(copies[:, 0], copies[:, 1])
    big.save(tmp_path / "big.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "big.keras").predict(ids, verbose=0), got,
                               atol=1e-6)


@pytest.mark.parametrize("normalize_first", [True, False])
@pytest.mark.parametrize("k", [2, 3])
def test_transformer_encoder_stacks(normalize_first, k):
    model = encoder_stack(normalize_first)
    x = RNG.normal(size=(2, 6, 8)).astype("float32")
    want = model.predict(x, verbose=0)
    for noise in (0.0, 0.05):
        big = widen(model, k, noise=noise, seed=1)
        got = narrow_outputs(big.predict(widen_inputs(x, k), verbose=0), k)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_feature_inputs_and_kept_output_width():
    model = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(6, activation="tanh"),
        keras.layers.Dense(6, activation="relu"),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(3),
    ])
    randomize(model)
    x = RNG.normal(size=(4, 5)).astype("float32")
    big = widen(model, 2, noise=0.1, keep_output_width=True)
    assert big.input.shape == (None, 5) and big.output.shape == (None, 3)
    assert big.layers[1].units == 12
    np.testing.assert_allclose(big.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_fit_after_widening_lowers_the_loss():
    model = keras.Sequential([
        keras.Input((7,), dtype="int32"),
        keras.layers.Embedding(50, 8),
        keras.layers.LayerNormalization(),
        keras.layers.Dense(16, activation="gelu"),
        keras.layers.Dense(8),
    ])
    randomize(model, 0.3)
    ids = RNG.integers(0, 50, size=(64, 7))
    target = RNG.normal(size=(64, 7, 16)).astype("float32")
    big = widen(model, 2, noise=0.01, seed=0)
    big.compile(keras.optimizers.Adam(1e-2), "mse")
    first = big.evaluate(ids, target, verbose=0)
    big.fit(ids, target, epochs=5, batch_size=16, verbose=0)
    assert big.evaluate(ids, target, verbose=0) < first


@pytest.mark.parametrize("factor", [1, 0, 2.5, True, "2"])
def test_factor_must_be_an_integer_of_at_least_two(factor):
    with pytest.raises(ValueError, match="factor"):
        widen(plain_model(), factor)


def test_unsupported_layers_are_named():
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Conv1D(4, 3, name="my_conv")])
    with pytest.raises(ValueError, match="my_conv.*Conv1D"):
        widen(model, 2)
    for noise in (-1.0, 1.5, 1e300, np.inf):  # 1e300 wrote 320 non-finite weights
        with pytest.raises(ValueError, match=re.escape(f"noise={noise!r}")):
            widen(plain_model(), 2, noise=noise)
    broken = plain_model()
    dense = next(layer for layer in broken.layers if isinstance(layer, keras.layers.Dense))
    dense.kernel.assign(np.full(dense.kernel.shape, np.inf))
    with pytest.raises(ValueError, match="non-finite values for `.*kernel`"):
        widen(broken, 2)


@pytest.mark.slow
def test_widened_minilm_equals_the_original():
    """The real MiniLM, doubled with noise (exact widening and k = 3 are checked on the
    small Transformer stacks above: what widening does per layer does not depend on the
    model's size)."""
    backbone, pre = load_minilm(24)
    texts = ["A man is playing a guitar.", "Stocks fell sharply on Monday after the report.", "ok"]
    x = {k: np.asarray(v) for k, v in pre(texts).items()}
    real = x["padding_mask"].astype(bool)
    assert not real.all()  # real padding in the batch
    before = [np.array(v) for v in backbone.weights[:4]]
    big = widen(backbone, 2, noise=0.02, seed=0)
    assert type(big) is type(backbone) and big.hidden_dim == 768 and big.num_heads == 12
    want = backbone.predict(x, verbose=0)
    got = narrow_outputs(big.predict(x, verbose=0), 2)
    np.testing.assert_allclose(got["sequence_output"][real], want["sequence_output"][real], atol=1e-5)
    np.testing.assert_allclose(got["pooled_output"], want["pooled_output"], atol=1e-5)
    # Padded positions (whose outputs nothing reads) carry MiniLM's large outlier features
    # (|x| ~ 5); float32 rounding of the wider sums leaves them within 1e-4.
    np.testing.assert_allclose(got["sequence_output"][~real], want["sequence_output"][~real], atol=1e-4)
    for v, b in zip(backbone.weights[:4], before, strict=True):
        np.testing.assert_array_equal(np.asarray(v), b)  # the original is untouched
