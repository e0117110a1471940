"""p_tuning_model / freeze_prompts / apply_prompt_template on the real pretrained MiniLM."""

import keras
import numpy as np
import pytest

from keras_space.models import apply_prompt_template, freeze_prompts, p_tuning_model
from tests.backend import BACKEND, variables_kept

from conftest import load_minilm

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

TEXTS = ["a great film", "the plot was dull and far too long", "ok", "I loved every minute"]
LABELS = np.array([1, 0, 1, 1])
ANCHORS = [2023, 3185, 2001]  # "this", "movie", "was"
PLACEHOLDERS = [1, 2, 3]  # [unused0] [unused1] [unused2]
# fits run the cheaper way on each backend (TensorFlow eagerly: no tracing; JAX compiled:
# eagerly it compiles every op); the compiled steps are tested on small backbones
EAGER = BACKEND == "tensorflow"


@pytest.fixture(scope="module")
def minilm():
    backbone, pre = load_minilm(16)
    inputs = {k: np.asarray(v) for k, v in pre(TEXTS).items()}
    return backbone, inputs


def backbone_states(backbone, token_ids, padding_mask):
    out = backbone({"token_ids": token_ids, "padding_mask": padding_mask,
                    "segment_ids": np.zeros_like(token_ids)})
    return np.asarray(out["sequence_output"])


def outputs(model, x):
    """The model's outputs, called directly: the compiled predict step of a
    P-tuning model is tested on small backbones (p_tuning_backbones_test.py)."""
    return np.asarray(model(x))


def head(model, features):
    kernel, bias = model.get_layer("classifier").get_weights()
    return features @ kernel + bias


@pytest.mark.slow
def test_prefix_equals_the_backbone_on_anchor_tokens(minilm):
    backbone, x = minilm
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=3, encoder="lstm",
                           anchor_token_ids=ANCHORS, pooling="cls")
    n = len(ANCHORS)
    ids = np.concatenate([np.tile(ANCHORS, (len(TEXTS), 1)), x["token_ids"]], 1)
    mask = np.concatenate([np.ones((len(TEXTS), n), "int32"), x["padding_mask"]], 1)
    want = head(model, backbone_states(backbone, ids, mask)[:, n])
    np.testing.assert_allclose(outputs(model, x), want, atol=1e-5)


@pytest.mark.slow
def test_template_equals_the_backbone_on_anchor_tokens(minilm):
    backbone, x = minilm
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=3, placeholder_ids=PLACEHOLDERS,
                           anchor_token_ids=ANCHORS, pooling="mean")
    t = apply_prompt_template(x, [1, 2, "text", 3], PLACEHOLDERS)
    # [CLS] p1 p2 text p3 [SEP], numpy check of the layout
    real = x["token_ids"][0][x["padding_mask"][0] == 1]
    np.testing.assert_array_equal(t["token_ids"][0][: len(real) + 3], [101, 1, 2, *real[1:-1], 3, 102])
    ids = t["token_ids"].copy()
    for p, a in zip(PLACEHOLDERS, ANCHORS, strict=True):
        ids[ids == p] = a
    states = backbone_states(backbone, ids, t["padding_mask"]).astype("float64")
    m = t["padding_mask"][..., None]
    want = head(model, (states * m).sum(1) / m.sum(1))
    np.testing.assert_allclose(outputs(model, t), want, atol=1e-5)


@pytest.mark.slow
def test_frozen_backbone_is_bit_identical_after_fit_with_weight_decay(minilm):
    backbone, x = minilm
    placeholders = PLACEHOLDERS
    x = apply_prompt_template(x, [1, "text", 2, 3], placeholders)
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=3, encoder="mlp",
                           placeholder_ids=placeholders, dropout=0.1)
    prompt_names = {w.path for w in model.get_layer("prompt_encoder").trainable_weights}
    head_names = {w.path for w in model.get_layer("classifier").trainable_weights}
    assert {w.path for w in model.trainable_weights} == prompt_names | head_names
    before = [np.array(w) for w in backbone.weights]
    prompt_before = [np.array(w) for w in model.get_layer("prompt_encoder").weights]
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=EAGER)
    model.fit(x, LABELS, epochs=2, batch_size=2, verbose=0)
    for w, b in zip(backbone.weights, before, strict=True):
        np.testing.assert_array_equal(np.asarray(w), b, err_msg=w.path)
    moved = [not np.array_equal(a, np.asarray(w)) for a, w in
             zip(prompt_before, model.get_layer("prompt_encoder").weights, strict=True)]
    assert all(moved)


@pytest.mark.slow
def test_freeze_prompts_and_saving(minilm, tmp_path):
    backbone, x = minilm
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=4, encoder="mlp", dropout=0.2)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=EAGER)
    model.fit(x, LABELS, epochs=1, batch_size=2, verbose=0)
    logits = outputs(model, x)

    frozen = freeze_prompts(model)
    assert not frozen.get_layer("prompt_encoder").weights[1:]  # only the computed table
    np.testing.assert_array_equal(outputs(frozen, x), logits)
    frozen.save(tmp_path / "frozen.keras")
    np.testing.assert_array_equal(
        outputs(keras.saving.load_model(tmp_path / "frozen.keras"), x), logits
    )
    # (its SavedModel export: p_tuning_backbones_test, on a small BERT)

    model.save(tmp_path / "train.keras")  # the training form keeps the encoder and optimizer
    resumed = keras.saving.load_model(tmp_path / "train.keras")
    enc = resumed.get_layer("prompt_encoder")
    assert enc.encoder == "mlp" and len(enc.trainable_weights) == len(model.get_layer("prompt_encoder").trainable_weights)
    np.testing.assert_array_equal(outputs(resumed, x), logits)
    assert int(resumed.optimizer.iterations) == int(model.optimizer.iterations)
    assert {w.path for w in resumed.trainable_weights} == {w.path for w in model.trainable_weights}
    for a, b in zip(resumed.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    resumed.run_eagerly = EAGER
    resumed.fit(x, LABELS, epochs=1, batch_size=2, verbose=0)


@pytest.mark.slow
def test_masked_lm_head_scores_label_words(minilm):
    backbone, x = minilm
    t = apply_prompt_template(x, [1, 2, 103, "text"], PLACEHOLDERS[:2])
    model = p_tuning_model(backbone, num_virtual_tokens=2, placeholder_ids=PLACEHOLDERS[:2],
                           head="masked_lm", label_token_ids=[2919, 2204], mask_token_id=103,
                           anchor_token_ids=ANCHORS[:2])
    names = {w.path.split("/")[0] for w in model.trainable_weights}
    assert names == {"prompt_encoder", "masked_lm_head"}
    lm = model.get_layer("masked_lm_head")
    ids = t["token_ids"].copy()
    for p, a in zip(PLACEHOLDERS[:2], ANCHORS[:2], strict=True):
        ids[ids == p] = a
    states = backbone_states(backbone, ids, t["padding_mask"])
    at_mask = states[np.arange(len(TEXTS)), np.argmax(t["token_ids"] == 103, axis=1)]
    dense_k, dense_b = (np.asarray(w) for w in lm._intermediate_dense.weights)
    gamma, beta = (np.asarray(w) for w in lm._intermediate_layer_norm.weights)
    from scipy.special import erf
    h = at_mask @ dense_k + dense_b
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12) * gamma + beta
    bias = next(np.asarray(w) for w in lm.weights if w.path.endswith("output_bias"))
    vocab = h @ np.asarray(backbone.token_embedding.embeddings).T + bias
    np.testing.assert_allclose(outputs(model, t), vocab[:, [2919, 2204]], rtol=1e-4, atol=1e-4)
    # Refused, never silently scored: a row without [MASK], a row without placeholders.
    no_mask = dict(t, token_ids=np.where(t["token_ids"] == 103, 2023, t["token_ids"]))
    with variables_kept(model), pytest.raises(Exception, match="mask token 103 in every row"):
        model.predict(no_mask, verbose=0)
    with pytest.raises(ValueError, match="mask token 103 in every row"):
        model(no_mask)
    # (with its [MASK]: the checks in a compiled step run in no set order)
    no_placeholders = dict(t, token_ids=np.where(np.isin(t["token_ids"], PLACEHOLDERS[:2]), 2023,
                                                 t["token_ids"]))
    with variables_kept(model), pytest.raises(Exception, match="at least one placeholder id"):
        model.predict(no_placeholders, verbose=0)
    with pytest.raises(ValueError, match="below the vocabulary size 30522.*\\[40000\\]"):
        p_tuning_model(backbone, num_virtual_tokens=2, placeholder_ids=PLACEHOLDERS[:2],
                       head="masked_lm", label_token_ids=[2919, 40000], mask_token_id=103)


def test_bad_inputs(minilm):
    backbone, x = minilm
    with pytest.raises(ValueError, match="Sequence too long"):
        p_tuning_model(backbone, num_classes=2, num_virtual_tokens=8, sequence_length=510)
    with pytest.raises(ValueError, match="no placeholder tokens"):
        apply_prompt_template(x, [2023, "text"], PLACEHOLDERS)
    with pytest.raises(ValueError, match="'text' exactly once"):
        apply_prompt_template(x, [1, 2], PLACEHOLDERS)
    with pytest.raises(ValueError, match="Sequence too long"):
        apply_prompt_template(x, [1] * 14 + ["text"], PLACEHOLDERS)
    with pytest.raises(ValueError, match="More placeholders than virtual tokens"):
        p_tuning_model(backbone, num_classes=2, num_virtual_tokens=2, placeholder_ids=PLACEHOLDERS)
    with pytest.raises(ValueError, match="num_classes"):
        p_tuning_model(backbone)
    with pytest.raises(ValueError, match="label_token_ids"):
        p_tuning_model(backbone, head="masked_lm", mask_token_id=103)
    with pytest.raises(ValueError, match="supported: keras_hub.models.BertBackbone.*Received: backbone=Sequential"):
        p_tuning_model(keras.Sequential([keras.layers.Dense(2)]), num_classes=2)
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=8)
    long = {k: np.tile(v, (1, 32)) for k, v in x.items()}  # 512 tokens + 8 virtual > 512
    with variables_kept(model), pytest.raises(Exception, match="Sequence too long"):
        model.predict(long, verbose=0)
