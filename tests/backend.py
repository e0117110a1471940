"""Backend-neutral helpers for the tests that run on TensorFlow and on JAX.

The tests compute gradients through these (a `tf.GradientTape` on TensorFlow,
`jax.grad` / `jax.jacfwd` on JAX), so one test body checks both backends.
"""

import contextlib

import keras
import numpy as np

BACKEND = keras.backend.backend()


def f64(x):
    """A float64 tensor holding `x` exactly."""
    return keras.ops.convert_to_tensor(np.asarray(x, "float64"), "float64")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient_function(f):
    """The function of `f`'s arguments (tensors) that returns the gradients of
    sum(f(*args)) in each of them (zeros where unconnected); differentiable again,
    for second derivatives (`jax.grad`, or a `tf.GradientTape` that an outer tape records)."""
    if BACKEND == "jax":
        import jax

        def gradients(*args):
            total = lambda *a: jax.numpy.sum(f(*a))  # noqa: E731
            return list(jax.grad(total, argnums=tuple(range(len(args))))(*args))
        return gradients
    import tensorflow as tf

    def gradients(*args):
        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            total = tf.reduce_sum(f(*args))
        return tape.gradient(total, args, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return gradients


def grad(f, *args):
    """The gradients of sum(f(*args)) in each of `args` (tensors), as numpy arrays."""
    return [numpy(g) for g in gradient_function(f)(*args)]


def compiled(fn):
    """`fn` traced and compiled as a model's step would be: `tf.function` or `jax.jit`."""
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def derivative(f, x):
    """d f(x) / d x for a scalar tensor `x` and any output shape (numpy)."""
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.jacfwd(f)(x))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    return tape.jacobian(y, x).numpy()


def value_and_variable_grads(fn, variables, state=()):
    """(fn()'s value, its gradients in `variables` as numpy), for a `fn` of no
    arguments that reads Keras variables and returns a scalar, or (scalar, aux)
    (then the value is (scalar, aux)). The `state` variables (e.g. seed generator
    states) that `fn` advances keep their new values, as they would eagerly."""
    def split(out):
        return out if isinstance(out, tuple) else (out, None)

    if BACKEND == "jax":
        import jax

        state = list(state)

        def f(values):
            mapping = list(zip(variables, values, strict=True))
            mapping += [(v, v.value) for v in state]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                value, aux = split(fn())
            return value, (aux, [scope.get_current_value(v) for v in state])

        (value, (aux, after)), grads = jax.value_and_grad(f, has_aux=True)(
            [v.value for v in variables])
        for v, new in zip(state, after, strict=True):
            v.assign(new)
        grads = [np.asarray(g) for g in grads]
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value, aux = split(fn())
        grads = [tf.convert_to_tensor(g).numpy()
                 for g in tape.gradient(value, [v.value for v in variables])]
    return ((value, aux) if aux is not None else value), grads


def runtime_errors():
    """What a failed data check raises inside a compiled step: TensorFlow's
    InvalidArgumentError, or JAX's runtime error carrying the ValueError's message."""
    if BACKEND == "jax":
        import jax

        return (ValueError, jax.errors.JaxRuntimeError)
    import tensorflow as tf

    return (ValueError, tf.errors.InvalidArgumentError)


@contextlib.contextmanager
def variables_kept(model):
    """Puts `model`'s variables back after the block: on JAX, Keras 3.15's `predict`,
    `evaluate` and `fit` leave them empty (their buffers donated to the step) when the
    compiled step raises (docs/backends.md), and a test that provokes such an error on a
    model holding a shared backbone must not empty the backbone for the tests after it.
    (All its variables: `get_weights` leaves out the seed generators' states.)"""
    saved = [np.array(v) for v in model.variables]
    try:
        yield
    finally:
        for v, value in zip(model.variables, saved, strict=True):
            v.assign(value)


def on_jax_too(rows, every=2, keep=None):
    """A grid's parametrize rows, of which the JAX session runs every `every`-th and the
    last (or those where `keep(row)` is true); the others run on TensorFlow only (marked
    `jax_skip_row`). For grids whose rows run the same keras.ops code on both backends with
    other values: the rows kept on JAX must still reach every branch of the code, and the
    whole grid on both backends would exceed the suite's time budget."""
    import pytest

    def on_jax(i, row):
        return keep(row) if keep is not None else i % every == 0 or i == len(rows) - 1

    return [pytest.param(*(row if isinstance(row, tuple) else (row,)),
                         marks=[] if on_jax(i, row) else [pytest.mark.jax_skip_row])
            for i, row in enumerate(rows)]
