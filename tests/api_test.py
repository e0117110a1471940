"""Every public path recorded by `keras_space_export` imports, and is registered."""

import importlib

import keras

import keras_space
from keras_space.api_export import PUBLIC_API, is_serializable


def test_version():
    assert isinstance(keras_space.__version__, str)


def test_public_paths_import_and_serialize():
    assert PUBLIC_API, "nothing is exported"
    for path, obj in PUBLIC_API.items():
        module_name, name = path.rsplit(".", 1)
        module = importlib.import_module(module_name)
        assert getattr(module, name) is obj, path
        if is_serializable(obj):
            registered = keras.saving.get_registered_name(obj)
            assert registered == f"keras_space>{name}", (path, registered)
