"""export_for_serving: boolean padding masks and raw strings, reloaded without Keras."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_space.models import export_for_serving, sentence_encoder
from tests.conftest import load_minilm

pytestmark = pytest.mark.slow
TEXTS = ["A man is playing a guitar.", "Two dogs run in the snow, barking!", "ok"]


def small_bert_scorer():
    """A one-layer BERT with MiniLM's vocabulary and a Dense head (what serving does
    with a model does not depend on its size; the real MiniLM is served below)."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(vocabulary_size=30522, num_layers=1, num_heads=2,
                                             hidden_dim=8, intermediate_dim=16)
    return keras.Model(backbone.input, keras.layers.Dense(1)(backbone.output["pooled_output"]))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """The small scorer, exported once each way the tests serve it: by features
    (token ids, segments, padding mask) and by sentence pairs."""
    _, preprocessor = load_minilm(32)
    model = small_bert_scorer()
    folder = tmp_path_factory.mktemp("scorer")
    export_for_serving(model, folder / "features")
    export_for_serving(model, folder / "pairs", preprocessor=preprocessor, num_texts=2)
    return model, preprocessor, folder


def test_boolean_masks_serve_the_keras_outputs(scorer):
    model, preprocessor, folder = scorer
    features = preprocessor(tf.constant(TEXTS))
    assert features["padding_mask"].dtype == tf.bool  # what the preprocessor gives
    want = model.predict(features, verbose=0)
    served = tf.saved_model.load(str(folder / "features"))
    got = served.serve({k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_raw_strings_serve_the_pretrained_encoder_without_keras(tmp_path):
    backbone, preprocessor = load_minilm(32)
    model = sentence_encoder(backbone)
    want = model.predict(preprocessor(tf.constant(TEXTS)), verbose=0)
    export_for_serving(model, tmp_path / "strings", preprocessor=preprocessor)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the tokenizer's ops)
        served = tf.saved_model.load({str(tmp_path / "strings")!r})
        np.save({str(tmp_path / "out.npy")!r}, served.serve(tf.constant({TEXTS!r})).numpy())
        # (TensorFlow itself imports keras; neither keras-hub nor keras_space is needed)
        assert not any(m.split(".")[0] in ("keras_hub", "keras_space")
                       for m in sys.modules), "the server imported keras-hub or keras_space"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=1e-5, atol=1e-5)


def test_sentence_pairs_are_served_as_two_string_inputs(scorer):
    model, preprocessor, folder = scorer
    a, b = tf.constant(TEXTS), tf.constant(TEXTS[::-1])
    want = model.predict(preprocessor(x=(a, b)), verbose=0)
    served = tf.saved_model.load(str(folder / "pairs"))  # kept: it owns the variables
    got = served.serve(a, b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_export_for_serving_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="functional Keras model"):
        export_for_serving(keras.layers.Dense(2), tmp_path / "x")
    inputs = keras.Input((2,), name="token_ids")
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    for bad in (3, 0, True):
        with pytest.raises(ValueError, match="num_texts"):
            export_for_serving(model, tmp_path / "x", num_texts=bad)


def test_served_strings_the_tokenizer_cannot_read_the_same_way_are_refused(scorer):
    """Issue 30, item 9: a NUL byte (the graph tokenizer stopped there, the eager one did
    not: 0.41 apart), invalid UTF-8, pairs of 3 and 2 strings (uninitialised ids), and
    served token ids past the vocabulary are refused with the reason; ordinary strings,
    accents and emoji included, serve the Keras model's outputs."""
    model, preprocessor, folder = scorer
    served = tf.saved_model.load(str(folder / "pairs"))
    texts = tf.constant(["Café au lait ☕", "naïve résumé", "ok"])
    want = model.predict(preprocessor(x=(texts, texts[::-1])), verbose=0)
    np.testing.assert_allclose(served.serve(texts, texts[::-1]), want, rtol=1e-5, atol=1e-6)
    for a, b, match in (
        (["a\x00man", "x"], ["y", "z"], "text_0 holds a NUL byte"),
        ([b"bad\xff", b"x"], ["y", "z"], "text_0 is not valid UTF-8"),
        (["a", "b", "c"], ["y", "z"], "text_0 and text_1 must hold the same number"),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            served.serve(tf.constant(a), tf.constant(b))

    by_ids = tf.saved_model.load(str(folder / "features"))
    features = dict(preprocessor(x=(texts, texts)))
    features["token_ids"] = tf.tensor_scatter_nd_update(features["token_ids"], [[0, 1]], [30522])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`token_ids` must hold ids in \[0, 30522\)"):
        by_ids.serve({k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")})


def test_export_for_serving_refuses_what_is_not_a_preprocessor(tmp_path):
    _, preprocessor = load_minilm(32)
    backbone_inputs = {name: keras.Input((None,), dtype="int32", name=name)
                       for name in ("token_ids", "segment_ids", "padding_mask")}
    summed = keras.layers.Lambda(lambda d: keras.ops.cast(d["token_ids"], "float32"))(
        backbone_inputs)
    model = keras.Model(backbone_inputs, summed)
    for bad, match in (("bert", "keras-hub preprocessor layer"),
                       (preprocessor.tokenizer, "bare tokenizer")):
        with pytest.raises(ValueError, match=match):
            export_for_serving(model, tmp_path / "x", preprocessor=bad)

    class NoSegments(keras.layers.Layer):
        def call(self, x):
            return {"token_ids": preprocessor(x=x)["token_ids"]}

    with pytest.raises(ValueError, match=r"lacks the model's inputs \['padding_mask', "
                                         r"'segment_ids'\]"):
        export_for_serving(model, tmp_path / "x", preprocessor=NoSegments())
