"""Test helpers. The autouse seeding/policy fixture, `sts_dir` and the environment
live in ../conftest.py (shared with README.md's code blocks)."""

import pytest


def load_minilm(sequence_length):
    """The pretrained MiniLM backbone and a preprocessor of `sequence_length` tokens."""
    keras_hub = pytest.importorskip("keras_hub")
    from keras_space.utils import minilm_path

    path = minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=sequence_length)
    return backbone, pre
