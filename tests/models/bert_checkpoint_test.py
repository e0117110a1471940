"""bert_from_checkpoint against the pretrained MiniLM (issue 17).

The Google-format checkpoint is written here from MiniLM's Hugging Face
safetensors with the fixed HF <-> Google correspondence (HF's own converter's
names: `encoder.layer.0.attention.self.query.weight` is the transpose of
`bert/encoder/layer_0/attention/self/query/kernel`), by `tf.raw_ops.SaveV2`, and
read back by our reader; the reference is keras-hub's own loading of the same
preset (its HF converter), so neither side shares our name mapping.
"""

import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_space.models import bert_from_checkpoint

pytestmark = pytest.mark.slow


def _google_weights(hf):
    """HF BertModel tensors -> Google checkpoint names (kernels transposed)."""
    out = {}
    for name, value in hf.items():
        if name.endswith("position_ids"):
            continue
        google = "bert/" + name.replace(".", "/").replace("layer/", "layer_")
        google = google.replace("LayerNorm/weight", "LayerNorm/gamma")
        google = google.replace("LayerNorm/bias", "LayerNorm/beta")
        if google.endswith("embeddings/weight"):
            google = google[: -len("/weight")]
        elif google.endswith("/weight"):
            google, value = google[: -len("/weight")] + "/kernel", value.T
        out[google] = np.ascontiguousarray(value)
    return out


def _save_v2(prefix, weights):
    names = sorted(weights)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(weights[n]) for n in names])


@pytest.fixture(scope="module")
def google_checkpoint(tmp_path_factory):
    pytest.importorskip("keras_hub")
    from safetensors.numpy import load_file

    from keras_space.utils import minilm_path

    root = tmp_path_factory.mktemp("google")
    hf_config = json.load(open(os.path.join(minilm_path(), "config.json")))
    google_keys = ("attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob",
                   "hidden_size", "initializer_range", "intermediate_size",
                   "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
                   "type_vocab_size", "vocab_size")
    json.dump({k: hf_config[k] for k in google_keys}, open(root / "bert_config.json", "w"))
    shutil.copy(os.path.join(minilm_path(), "vocab.txt"), root / "vocab.txt")
    weights = _google_weights(load_file(os.path.join(minilm_path(), "model.safetensors")))
    rng = np.random.default_rng(0)  # a masked-LM head (MiniLM ships none): random weights
    h, v = hf_config["hidden_size"], hf_config["vocab_size"]
    weights |= {
        "cls/predictions/transform/dense/kernel": rng.normal(0, 0.05, (h, h)).astype("float32"),
        "cls/predictions/transform/dense/bias": rng.normal(0, 0.05, h).astype("float32"),
        "cls/predictions/transform/LayerNorm/gamma": rng.normal(1, 0.1, h).astype("float32"),
        "cls/predictions/transform/LayerNorm/beta": rng.normal(0, 0.1, h).astype("float32"),
        "cls/predictions/output_bias": rng.normal(0, 0.1, v).astype("float32"),
        "bert/encoder/layer_0/attention/self/query/kernel/adam_m": np.zeros((h, h), "float32"),
    }
    _save_v2(str(root / "bert_model.ckpt"), weights)
    return root, weights


def test_minilm_round_trips_through_the_google_format(google_checkpoint):
    from tests.conftest import load_minilm

    root, weights = google_checkpoint
    bert = bert_from_checkpoint(root / "bert_config.json", str(root / "bert_model.ckpt"),
                                root / "vocab.txt")
    original, preprocessor = load_minilm(32)
    x = preprocessor(["A man is playing a guitar.", "Zwei Hunde spielen im Schnee!"])
    x = {k: x[k] for k in ("token_ids", "segment_ids", "padding_mask")}
    ours, want = bert.backbone(x), original(x)
    for key in ("sequence_output", "pooled_output"):
        np.testing.assert_allclose(ours[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
    # the tokenizer from vocab.txt gives the preset's ids
    ids = np.asarray(bert.tokenizer("A man is playing a guitar."))  # lowercased, as the preset
    np.testing.assert_array_equal(ids, np.asarray(x["token_ids"][0][1:1 + len(ids)]))

    # the masked-LM head against numpy: LN(gelu(h W + b)) E^T + bias
    positions = np.array([[1, 3], [2, 5]])
    logits = keras.ops.convert_to_numpy(bert.masked_lm_head(ours["sequence_output"], positions))
    hidden = np.take_along_axis(np.asarray(ours["sequence_output"]), positions[..., None], 1)
    c = "cls/predictions/"
    z = hidden @ weights[c + "transform/dense/kernel"] + weights[c + "transform/dense/bias"]
    from scipy.special import erf

    z = 0.5 * z * (1 + erf(z / np.sqrt(2)))
    z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-12)
    z = z * weights[c + "transform/LayerNorm/gamma"] + weights[c + "transform/LayerNorm/beta"]
    expected = z @ weights["bert/embeddings/word_embeddings"].T + weights[c + "output_bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_missing_or_mis_shaped_variables_are_named(google_checkpoint, tmp_path):
    root, weights = google_checkpoint
    config = root / "bert_config.json"
    missing = dict(weights)
    del missing["bert/encoder/layer_3/intermediate/dense/bias"]
    _save_v2(str(tmp_path / "missing"), missing)
    with pytest.raises(ValueError, match="no variable 'bert/encoder/layer_3/intermediate/dense/bias'"):
        bert_from_checkpoint(config, str(tmp_path / "missing"))
    wrong = dict(weights)
    wrong["bert/pooler/dense/kernel"] = np.zeros((384, 383), "float32")
    _save_v2(str(tmp_path / "wrong"), wrong)
    with pytest.raises(ValueError, match=r"'bert/pooler/dense/kernel' has shape \(384, 383\); "
                       r"bert_config.json implies \(384, 384\)"):
        bert_from_checkpoint(config, str(tmp_path / "wrong"))
    with pytest.raises(ValueError, match="checkpoint_path"):
        bert_from_checkpoint(config, str(tmp_path / "nothing_here"))
    with pytest.raises(ValueError, match="config_path"):
        bert_from_checkpoint(tmp_path / "none.json", str(root / "bert_model.ckpt"))
    bad = json.load(open(config)) | {"hidden_act": "relu"}
    json.dump(bad, open(tmp_path / "relu.json", "w"))
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        bert_from_checkpoint(tmp_path / "relu.json", str(root / "bert_model.ckpt"))
    with pytest.raises(ValueError, match="lowercase"):
        bert_from_checkpoint(config, str(root / "bert_model.ckpt"), lowercase="yes")


def test_a_folder_holding_one_checkpoint_is_read_and_damage_is_named(google_checkpoint, tmp_path):
    """Issue 30, item 8: the folder of a Google release (no `checkpoint` state file) is
    read like its prefix; a folder of several is refused naming them; NaN weights and
    config values of the wrong type are refused."""
    root, weights = google_checkpoint
    config = root / "bert_config.json"
    by_folder = bert_from_checkpoint(config, root).backbone
    by_prefix = bert_from_checkpoint(config, str(root / "bert_model.ckpt")).backbone
    for a, b in zip(by_folder.weights, by_prefix.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.ckpt", "b.ckpt"):
        _save_v2(str(two / name), {"bert/pooler/dense/bias": np.zeros(384, "float32")})
    with pytest.raises(ValueError, match=r"folder holding 2 checkpoints \['a.ckpt', 'b.ckpt'\]"):
        bert_from_checkpoint(config, two)
    damaged = dict(weights)
    damaged["bert/encoder/layer_1/output/dense/bias"] = np.full(384, np.nan, "float32")
    _save_v2(str(tmp_path / "nan"), damaged)
    with pytest.raises(ValueError, match="'bert/encoder/layer_1/output/dense/bias' holds 384 "
                                         "non-finite values"):
        bert_from_checkpoint(config, str(tmp_path / "nan"))
    for change, match in (({"vocab_size": "30"}, "vocab_size"),
                          ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob")):
        json.dump(json.load(open(config)) | change, open(tmp_path / "c.json", "w"))
        with pytest.raises(ValueError, match=f"bert_config.json's {match}"):
            bert_from_checkpoint(tmp_path / "c.json", root)
