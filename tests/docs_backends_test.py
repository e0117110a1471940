"""The JAX block of docs/backends.md, run by the JAX session (the other
documentation blocks run in the TensorFlow session)."""

import os
import re

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)


@pytest.mark.slow
@pytest.mark.all_backends_slow
def test_the_jax_example_of_the_backends_page(minilm):
    with open(os.path.join(ROOT, "docs", "backends.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python jax notest\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) == 1
    if keras.backend.backend() != "jax":
        pytest.skip("a JAX example: the JAX session runs it (it sets KERAS_BACKEND before Keras loads)")
    exec(compile(blocks[0], "docs/backends.md", "exec"), {})
