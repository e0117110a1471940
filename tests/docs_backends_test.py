"""The JAX block of docs/backends.md, run by the JAX session (the other
documentation blocks run in the TensorFlow session)."""

import os
import re

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)


@pytest.mark.slow
def test_the_jax_example_of_the_backends_page(minilm):
    with open(os.path.join(ROOT, "docs", "backends.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python jax notest\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) == 1
    code = compile(blocks[0], "docs/backends.md", "exec")  # on both: the block is valid Python
    if keras.backend.backend() == "jax":  # it sets KERAS_BACKEND before Keras loads: JAX only
        exec(code, {})
