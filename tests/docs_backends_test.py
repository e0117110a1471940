"""The JAX block of docs/backends.md, run in a fresh JAX process (the other
documentation blocks run in the TensorFlow session)."""

import os
import re

import pytest

from tests.backends_test import ROOT, run_python


@pytest.mark.slow
def test_the_jax_example_of_the_backends_page(minilm):
    with open(os.path.join(ROOT, "docs", "backends.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python jax notest\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) == 1
    run_python(blocks[0], "jax", timeout=400)
