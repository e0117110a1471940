"""The one decorator that makes a symbol public.

Every public class and function of keras_space is decorated with
`keras_space_export("keras_space.<subpackage>.<Name>")`. The decorator

- registers the object (when Keras can serialize it) for Keras serialization under the package name
  `keras_space` (so `.keras` files name it `keras_space>Name`), and
- records the public import path in `PUBLIC_API`, which a test uses to check
  that every path in DESIGN.md really imports.
"""

import keras

PACKAGE = "keras_space"

# public import path -> object
PUBLIC_API = {}


def is_serializable(obj):
    """Functions and classes with `get_config` (layers, losses, ...) are
    registered; others (callbacks, helpers) are only recorded as public."""
    return not isinstance(obj, type) or hasattr(obj, "get_config")


def keras_space_export(path):
    """Mark a class or function as public API at `path` (a string or a list).

    Example:

    ```python
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
        registered = obj
        if is_serializable(obj):
            registered = keras.saving.register_keras_serializable(
                package=PACKAGE, name=name
            )(obj)
        for p in paths:
            PUBLIC_API[p] = registered
        return registered

    return decorator
