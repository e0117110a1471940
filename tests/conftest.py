"""Test helpers. The autouse seeding/policy fixture, garbage collection, `sts_dir`
and the environment live in ../conftest.py (shared with README.md's code blocks)."""

import functools

import pytest


@functools.lru_cache(maxsize=1)
def _minilm_backbone():
    keras_hub = pytest.importorskip("keras_hub")
    from keras_space.utils import minilm_path

    return keras_hub.models.BertBackbone.from_preset(minilm_path())


@functools.cache
def _minilm_preprocessor(sequence_length):
    import keras_hub

    from keras_space.utils import minilm_path

    return keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=sequence_length
    )


def load_minilm(sequence_length):
    """The pretrained MiniLM backbone and a preprocessor of `sequence_length` tokens.

    The backbone is loaded once per session and shared: no test may change its
    weights (P-tuning freezes it and checks it stays bit-identical; widening
    builds a new model). A test that changes its `trainable` flag restores it.
    """
    backbone = _minilm_backbone()
    backbone.trainable = True
    return backbone, _minilm_preprocessor(sequence_length)


@pytest.fixture
def saved_model_once(request):
    """Whether this parametrized contract test is the first variant of its layer class:
    the SavedModel clause (the costliest) runs once per class, the same variant on
    every machine and worker, whatever the test order."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return True
    marker = request.node.get_closest_marker("parametrize")
    names = [n.strip() for n in marker.args[0].split(",")] if isinstance(marker.args[0], str) \
        else list(marker.args[0])
    index = callspec.indices[names[0]]
    for key in ("cls", "layer_cls"):
        if key in names:
            position = names.index(key)
            classes = [values[position] for values in marker.args[1]]
            return classes.index(classes[index]) == index
    return index == 0
