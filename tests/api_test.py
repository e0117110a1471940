"""The public surface: every recorded path imports, and every exposed name is recorded."""

import importlib
import inspect
import pkgutil

import keras

import keras_space
from keras_space.api_export import PUBLIC_API, REGISTERED


def test_version():
    assert isinstance(keras_space.__version__, str)


def test_public_paths_import_and_serialize():
    assert PUBLIC_API, "nothing is exported"
    for path, obj in PUBLIC_API.items():
        module_name, name = path.rsplit(".", 1)
        module = importlib.import_module(module_name)
        assert getattr(module, name) is obj, path
        if REGISTERED[path]:
            registered = keras.saving.get_registered_name(obj)
            assert registered == f"keras_space>{name}", (path, registered)


def _public_packages():
    yield keras_space
    for info in pkgutil.iter_modules(keras_space.__path__, "keras_space."):
        if info.ispkg and not info.name.rsplit(".", 1)[1].startswith("_"):
            yield importlib.import_module(info.name)


def test_every_name_a_public_init_exposes_is_exported():
    packages = list(_public_packages())  # imported first: importing registers their exports
    exported = {id(obj) for obj in PUBLIC_API.values()}
    for package in packages:
        for name, obj in vars(package).items():
            if name.startswith("_") or inspect.ismodule(obj):
                continue
            assert id(obj) in exported, f"{package.__name__}.{name} is exposed but not exported"


def test_public_looking_helpers_are_exported_or_private():
    """In a public module, a function or class without a leading `_` is exported."""
    modules = [  # imported first: importing registers their exports
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(keras_space.__path__, "keras_space.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    exported = {id(obj) for obj in PUBLIC_API.values()}
    allowed = {"keras_space.api_export.keras_space_export"}  # the export mechanism itself
    internal = ("keras_space.utils.validation",)  # argument checkers: machinery, not API
    for module in modules:
        if module.__name__ in internal:
            assert not any(p.startswith(module.__name__ + ".") for p in PUBLIC_API), module
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            path = f"{module.__name__}.{name}"
            assert id(obj) in exported or path in allowed, f"{path} looks public: export it or prefix it with _"


def test_the_api_reference_lists_exactly_the_public_api():
    """docs/api/*.md (written by docs/gen_api.py) hold one `::: path` per public symbol."""
    import glob
    import os
    import re

    import docs.gen_api as gen

    pages = glob.glob(os.path.join(os.path.dirname(__file__), "..", "docs", "api", "*.md"))
    listed = [m for page in pages for m in re.findall(r"^::: (\S+)$", open(page).read(), re.M)]
    public = [p for paths in gen.public_api().values() for p in paths]
    assert len(listed) == len(set(listed)), "a symbol is listed twice"
    assert sorted(listed) == sorted(public), (
        f"run `python docs/gen_api.py`: missing {sorted(set(public) - set(listed))}, "
        f"extra {sorted(set(listed) - set(public))}")
