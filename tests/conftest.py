import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import keras  # noqa: E402
import pytest  # noqa: E402

STS_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sts")


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Each test starts seeded, in float32, with a fresh Keras session."""
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


@pytest.fixture
def sts_dir():
    """The shared STS data folder (skips when the data is absent)."""
    path = os.path.abspath(STS_DIR)
    if not os.path.isdir(path):
        pytest.skip(f"STS data not found at {path}")
    return path


def load_minilm(sequence_length):
    """The pretrained MiniLM backbone and a preprocessor of `sequence_length` tokens."""
    keras_hub = pytest.importorskip("keras_hub")
    from keras_space.utils import minilm_path

    path = minilm_path()
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=sequence_length)
    return backbone, pre
