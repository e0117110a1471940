"""The one decorator that makes a symbol public.

Every public class and function of keras_space is decorated with
`keras_space_export("keras_space.<subpackage>.<Name>")`. The decorator

- registers the object (when Keras can serialize it) for Keras serialization under the package name
  `keras_space` (so `.keras` files name it `keras_space>Name`), and
- records the public import path in `PUBLIC_API`; `tests/api_test.py` checks
  both directions (every recorded path imports, and every name a public
  `__init__` exposes is recorded), and
- refuses, on a Keras backend the object does not support, to construct or
  call it: a `NotImplementedError` naming the backend and the ones to use
  (`BACKENDS`: TensorFlow and JAX, the tested ones; TensorFlow-only objects
  say so with `backends=("tensorflow",)`).
"""

import functools

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

# the backends every public object is tested on (unless it names fewer)
BACKENDS = ("tensorflow", "jax")

# public import path -> the backends it runs on
SUPPORTED_BACKENDS = {}


def _refused_on_this_backend(obj, name, backends):
    """`obj`, or a stand-in that raises when constructed or called here."""
    backend = keras.backend.backend()
    if backend in backends:
        return obj
    message = (
        f"keras_space's {name} does not run on the {backend!r} Keras backend; it runs on "
        f"{' and '.join(backends)}: set KERAS_BACKEND={backends[0]} (or "
        "keras.config.set_backend) before importing keras."
    )
    if isinstance(obj, type):
        def __init__(self, *args, **kwargs):
            raise NotImplementedError(message)

        obj.__init__ = functools.wraps(obj.__init__)(__init__)
        return obj

    @functools.wraps(obj)
    def refuse(*args, **kwargs):
        raise NotImplementedError(message)

    return refuse


def keras_space_export(path, serializable=None, backends=BACKENDS):
    """Mark a class or function as public API at `path` (a string or a list).

    Args:
        path: the public import path(s), e.g. "keras_space.layers.MyLayer".
        serializable: register the object for Keras serialization. Defaults
            to None: functions and classes with `get_config` are registered.
            Pass False for helpers that never appear in a saved model
            (argument checkers, test utilities).
        backends: the Keras backends the object runs on. Defaults to
            `BACKENDS` (TensorFlow and JAX); elsewhere it raises
            `NotImplementedError` when constructed or called.

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
        obj = _refused_on_this_backend(obj, name, tuple(backends))
        register = _is_serializable(obj) if serializable is None else serializable
        registered = obj
        if register:
            registered = keras.saving.register_keras_serializable(
                package=PACKAGE, name=name
            )(obj)
        for p in paths:
            PUBLIC_API[p] = registered
            REGISTERED[p] = register
            SUPPORTED_BACKENDS[p] = tuple(backends)
        return registered

    return decorator
