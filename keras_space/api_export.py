"""The one decorator that makes a symbol public.

Every public class and function of keras_space is decorated with
`keras_space_export("keras_space.<subpackage>.<Name>")`. The decorator

- registers the object (when Keras can serialize it) for Keras serialization under the package name
  `keras_space` (so `.keras` files name it `keras_space>Name`), and
- records the public import path in `PUBLIC_API`; `tests/api_test.py` checks
  both directions (every recorded path imports, and every name a public
  `__init__` exposes is recorded).
"""

import keras

PACKAGE = "keras_space"

# public import path -> object
PUBLIC_API = {}


def _is_serializable(obj):
    """Functions and classes with `get_config` (layers, losses, ...) are
    registered; others (callbacks, helpers) are only recorded as public."""
    return not isinstance(obj, type) or hasattr(obj, "get_config")


# public import path -> whether it is registered for Keras serialization
REGISTERED = {}


def keras_space_export(path, serializable=None):
    """Mark a class or function as public API at `path` (a string or a list).

    Args:
        path: the public import path(s), e.g. "keras_space.layers.MyLayer".
        serializable: register the object for Keras serialization. Defaults
            to None: functions and classes with `get_config` are registered.
            Pass False for helpers that never appear in a saved model
            (argument checkers, test utilities).

    Example:

    ```python notest
    @keras_space_export("keras_space.layers.MyLayer")
    class MyLayer(keras.layers.Layer):
        ...
    ```
    """
    paths = [path] if isinstance(path, str) else list(path)
    for p in paths:
        if not p.startswith(PACKAGE + "."):
            raise ValueError(
                f"`path` must start with '{PACKAGE}.'. Received: path={p!r}"
            )

    def decorator(obj):
        name = paths[0].rsplit(".", 1)[1]
        register = _is_serializable(obj) if serializable is None else serializable
        registered = obj
        if register:
            registered = keras.saving.register_keras_serializable(
                package=PACKAGE, name=name
            )(obj)
        for p in paths:
            PUBLIC_API[p] = registered
            REGISTERED[p] = register
        return registered

    return decorator
