import keras
import numpy as np
import pytest

from keras_space.layers import MaskedMeanPooling
from keras_space.testing import run_layer_contract

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

RNG = np.random.default_rng(0)
H = RNG.normal(size=(4, 7, 5)).astype("float32")
H2 = RNG.normal(size=(4, 7, 5)).astype("float32")
LENGTHS = np.array([7, 3, 1, 5])
MASK = np.arange(7)[None, :] < LENGTHS[:, None]


def reference(h, mask):
    return np.stack([h[i, : mask[i].sum()].mean(0) for i in range(len(h))])


def test_ignores_padding_exactly():
    got = np.asarray(MaskedMeanPooling()(H, padding_mask=MASK))
    np.testing.assert_allclose(got, reference(H, MASK), rtol=1e-6)
    poisoned = H.copy()
    poisoned[~MASK] = 1e6
    np.testing.assert_array_equal(MaskedMeanPooling()(poisoned, padding_mask=MASK), got)


def test_float64_layer_pools_in_float64():
    """A float64 model's pooling keeps float64 (summed in float32 only at lower precision);
    a DTypePolicy argument survives get_config."""
    h = RNG.normal(size=(4, 7, 5))
    layer = MaskedMeanPooling(dtype=keras.DTypePolicy("float64"))  # as a backbone's policy
    layer = MaskedMeanPooling.from_config(layer.get_config())
    got = layer(h, padding_mask=MASK)
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    # a sum of at most 7 terms and one division: a few float64 ulps
    np.testing.assert_allclose(np.asarray(got), reference(h, MASK), rtol=1e-14, atol=1e-15)


def test_first_last_average():
    got = MaskedMeanPooling()([H, H2], padding_mask=MASK.astype("int32"))
    np.testing.assert_allclose(got, reference((H + H2) / 2, MASK), rtol=1e-5, atol=1e-6)


def test_uses_an_upstream_keras_mask():
    ids = np.array([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0]])
    inputs = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(10, 4, mask_zero=True)
    model = keras.Model(inputs, MaskedMeanPooling()(emb(inputs)))
    table = np.asarray(emb.embeddings)
    want = np.stack([table[[3, 4, 5]].mean(0), table[[7]].mean(0)])
    np.testing.assert_allclose(model.predict(ids, verbose=0), want, rtol=1e-6)


def test_all_padding_row_pools_to_zero():
    mask = MASK.copy()
    mask[1] = False
    out = np.asarray(MaskedMeanPooling()(H, padding_mask=mask))
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("data", [H, [H, H2]])
def test_layer_contract(data, saved_model_once):
    run_layer_contract(
        MaskedMeanPooling, {}, input_data=data, expected_output_shape=(4, 5), padding_mask=MASK,
        run_saved_model=saved_model_once,
        expected_num_trainable_weights=0, expected_num_non_trainable_weights=0,
    )


def test_mask_input_survives_save_and_export(tmp_path):
    h = keras.Input((7, 5))
    m = keras.Input((7,), dtype="bool")
    model = keras.Model([h, m], MaskedMeanPooling()(h, padding_mask=m))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict([H, MASK], verbose=0), reference(H, MASK), rtol=1e-6)


def test_non_finite_padding_is_ignored():
    poisoned = H.copy()
    poisoned[~MASK] = np.nan
    poisoned[~MASK & (np.arange(7)[None, :] % 2 == 0)] = np.inf
    got = np.asarray(MaskedMeanPooling()(poisoned, padding_mask=MASK))
    np.testing.assert_allclose(got, reference(H, MASK), rtol=1e-6)
    got = np.asarray(MaskedMeanPooling()([poisoned, H2], padding_mask=MASK))
    np.testing.assert_allclose(got, reference((H + H2) / 2, MASK), rtol=1e-6)


def test_wrong_rank_is_refused_and_length_zero_pools_to_zeros():
    with pytest.raises(ValueError, match=r"\(batch, sequence, dim\).*\(4, 5\)"):
        MaskedMeanPooling()(H[:, 0])
    empty = np.zeros((3, 0, 5), "float32")
    np.testing.assert_array_equal(MaskedMeanPooling()(empty), np.zeros((3, 5)))
    np.testing.assert_array_equal(
        MaskedMeanPooling()(empty, padding_mask=np.zeros((3, 0), bool)), np.zeros((3, 5))
    )
