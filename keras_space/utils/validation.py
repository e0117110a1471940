"""The one module that checks arguments (internal: not public API).

Every public constructor and function of keras_space checks its arguments
here, so that one rule holds everywhere and every refusal reads the same:

    `name` must be <what>. Received: name=<value>

A value of the wrong type (a string where a number belongs, a float where an
int belongs, `True` where a count belongs) raises `ArgumentTypeError`, which is
both a `TypeError` and a `ValueError` (as numpy's `AxisError` is both a
`ValueError` and an `IndexError`), so either `except` clause catches it. A value
of the right type outside its range raises `ValueError`.

Each checker returns the value in its canonical Python type (`int`, `float`,
`bool`, `list` of `int`), so a constructor can store what it returns.

Example:

```python
from keras_space.utils import validation

units = validation.positive_int("units", 8)             # 8
rate = validation.probability("dropout", 0.1)           # 0.1
validation.choice("kind", "sparse", ("gaussian", "sparse"))
```
"""

import math
import numbers

import keras
import numpy as np

__all__ = [
    "ArgumentTypeError",
    "choice",
    "finite_float",
    "int_sequence",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "positive_values",
    "probability",
    "strict_bool",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: both a `TypeError` and a `ValueError`."""


def _fail(name, what, value, error=ValueError):
    raise error(f"`{name}` must be {what}. Received: {name}={value!r}")


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _is_real(value):
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def positive_int(name, value, allow_none=False, minimum=1):
    """An int >= `minimum` (default 1); `bool` is refused. Returns an `int` (or None)."""
    if value is None and allow_none:
        return None
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if allow_none:
        what += " or None"
    if not _is_int(value):
        _fail(name, what, value, ArgumentTypeError)
    if value < minimum:
        _fail(name, what, value)
    return int(value)


def non_negative_int(name, value, allow_none=False):
    """An int >= 0; `bool` is refused. Returns an `int` (or None)."""
    return positive_int(name, value, allow_none=allow_none, minimum=0)


def _real(name, value, what, allow_none):
    if value is None and allow_none:
        return None
    if not _is_real(value):
        _fail(name, what, value, ArgumentTypeError)
    value = float(value)
    if math.isnan(value):
        _fail(name, what, value)
    return value


def finite_float(name, value, allow_none=False):
    """A finite real number. Returns a `float` (or None)."""
    what = "a finite number" + (" or None" if allow_none else "")
    value = _real(name, value, what, allow_none)
    if value is not None and not math.isfinite(value):
        _fail(name, what, value)
    return value


def positive_float(name, value, allow_none=False, maximum=None, minimum=None):
    """A finite real number > 0 (and in [`minimum`, `maximum`] when given). Returns a `float`."""
    what = "a positive finite number"
    if minimum is not None or maximum is not None:
        low = f"[{minimum}" if minimum is not None else "(0"
        high = f"{maximum}]" if maximum is not None else "inf)"
        what = f"a number in {low}, {high}"
    if allow_none:
        what += " or None"
    value = _real(name, value, what, allow_none)
    if value is not None and not (
        0.0 < value < math.inf
        and (maximum is None or value <= maximum)
        and (minimum is None or value >= minimum)
    ):
        _fail(name, what, value)
    return value


def non_negative_float(name, value, allow_none=False):
    """A finite real number >= 0. Returns a `float` (or None)."""
    what = "a finite number >= 0" + (" or None" if allow_none else "")
    value = _real(name, value, what, allow_none)
    if value is not None and not 0.0 <= value < math.inf:
        _fail(name, what, value)
    return value


def probability(name, value, inclusive_one=False):
    """A rate in [0, 1) (or [0, 1] with `inclusive_one`). Returns a `float`."""
    what = "a number in [0, 1]" if inclusive_one else "a number in [0, 1)"
    value = _real(name, value, what, False)
    if not (0.0 <= value < 1.0 or (inclusive_one and value == 1.0)):
        _fail(name, what, value)
    return value


def choice(name, value, choices):
    """One of `choices` (compared with `==`, strings must be exact). Returns `value`."""
    if isinstance(value, (list, dict, set, np.ndarray)) or value not in choices:
        _fail(name, f"one of {tuple(choices)}", value)
    return value


def strict_bool(name, value):
    """`True` or `False` (also numpy's); "no", 0 and None are refused. Returns a `bool`."""
    if not isinstance(value, (bool, np.bool_)):
        _fail(name, "a bool (True or False)", value, ArgumentTypeError)
    return bool(value)


def int_sequence(name, value, allow_none=False, min_length=1, minimum=None, distinct=False):
    """A list/tuple/1-D array of ints (each >= `minimum` when given). Returns a list of `int`."""
    if value is None and allow_none:
        return None
    what = "a sequence of ints" + (" or None" if allow_none else "")
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            _fail(name, what, value, ArgumentTypeError)
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        _fail(name, what, value, ArgumentTypeError)
    values = [int(v) for v in value]
    if len(values) < min_length:
        _fail(name, f"a sequence of at least {min_length} ints", value)
    if minimum is not None and any(v < minimum for v in values):
        _fail(name, f"a sequence of ints >= {minimum}", value)
    if distinct and len(set(values)) != len(values):
        _fail(name, "a sequence of distinct ints", value)
    return values


def positive_values(name, value, minimum=None, maximum=None):
    """A positive finite number, or an array-like of them (e.g. `sigma`, `kappa`), in
    [`minimum`, `maximum`] when given.

    Python numbers, lists and numpy arrays are checked now; tensors (whose
    values may be symbolic) are passed through unchecked. Returns `value`.
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        _fail(name, "a positive finite number", value, ArgumentTypeError)
    if isinstance(value, (numbers.Real, np.ndarray, np.generic, list, tuple)):
        try:
            array = np.asarray(value, dtype="float64")
        except (TypeError, ValueError):
            _fail(name, "a positive finite number", value, ArgumentTypeError)
        if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array <= 0):
            _fail(name, "positive and finite", value)
        if (minimum is not None and np.any(array < minimum)) or (
            maximum is not None and np.any(array > maximum)
        ):
            _fail(name, f"in [{minimum}, {maximum}]", value)
    return value


def holds(name, tensor, ok, what):
    """`tensor` (returned) if the boolean tensor `ok` is all True, else an error.

    Use the returned tensor: inside a graph it is the one that waits for the check.

    Eagerly: a `ValueError` naming the argument and how many entries fail. Inside a
    traced function: on TensorFlow an `InvalidArgumentError` at run time with the same
    message (a graph cannot raise a Python error when its data arrive); on JAX under
    `jit`, a `jax.debug.callback` raises that `ValueError` when the data arrive (JAX
    reports it as a runtime error carrying the message).
    """
    message = f"`{name}` must hold {what}"

    def refuse_failures(ok_value):  # concrete values: eagerly, or in JAX's callback
        bad = int(np.sum(~np.asarray(ok_value)))
        if bad:
            raise ValueError(f"{message}. Received: {name} with {bad} entries that are not")

    if keras.backend.backend() == "jax":
        import jax

        if isinstance(ok, jax.core.Tracer):  # under jit: checked when the data arrive
            jax.debug.callback(refuse_failures, ok)
            return tensor
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():  # the returned tensor waits for the check
            check = tf.debugging.assert_equal(tf.reduce_all(ok), True, message=message)
            with tf.control_dependencies([check]):
                return tf.nest.map_structure(tf.identity, tensor)
    refuse_failures(keras.ops.convert_to_numpy(ok))
    return tensor


def all_finite(name, tensor):
    """A float tensor without NaN or inf (checked at run time inside graphs). Returns it."""
    return holds(name, tensor, keras.ops.isfinite(tensor), "finite values only (no NaN or inf)")


def all_bits(name, tensor):
    """A tensor of 0/1 values only (checked at run time inside graphs). Returns it."""
    ops = keras.ops
    return holds(
        name, tensor, ops.logical_or(ops.equal(tensor, 0), ops.equal(tensor, 1)), "0/1 bits only"
    )


def all_token_ids(name, tensor, vocabulary):
    """Integer ids in [0, `vocabulary`) only (checked at run time inside graphs): a CPU
    embedding lookup fails obscurely past the table, an accelerator's reads garbage.
    Returns the tensor."""
    ops = keras.ops
    return holds(
        name, tensor, ops.logical_and(tensor >= 0, tensor < vocabulary),
        f"ids in [0, {vocabulary}) (the vocabulary)",
    )
