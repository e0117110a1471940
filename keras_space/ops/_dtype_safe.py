"""`keras.ops` functions that keep float64 on JAX (internal).

Keras 3.15's type promotion maps 64-bit dtypes to 32-bit ones on every backend
but TensorFlow (`keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE`, "to be
aligned with JAX's default behavior"), also when JAX runs in x64 mode. The ops
that promote their input through it compute float64 data in float32: among
those used here `norm`, `sin`, `cos`, `arccos`, `arctan`, `tanh` and `floor`
(also `mean`, accumulated in float32, and `var`, which the library avoids). These wrappers call jax.numpy directly
on JAX (same semantics, the input's dtype kept) and `keras.ops` elsewhere.
"""

import keras
from keras import ops


def _keeping_dtype(name, jax_function):
    """`keras.ops.<name>`, or `jax_function` (jax.numpy's, by name) for float64 on JAX."""
    keras_op = getattr(ops, name)

    def op(x, *args, **kwargs):
        if keras.backend.backend() == "jax" and not isinstance(x, keras.KerasTensor):
            import jax.numpy as jnp

            x = jnp.asarray(x)
            if x.dtype == jnp.float64:
                return jax_function(jnp)(x, *args, **kwargs)
        return keras_op(x, *args, **kwargs)

    op.__name__ = name
    op.__doc__ = f"`keras.ops.{name}`, keeping float64 on JAX."
    return op


norm = _keeping_dtype("norm", lambda jnp: jnp.linalg.norm)
sin = _keeping_dtype("sin", lambda jnp: jnp.sin)
cos = _keeping_dtype("cos", lambda jnp: jnp.cos)
arccos = _keeping_dtype("arccos", lambda jnp: jnp.arccos)
arctan = _keeping_dtype("arctan", lambda jnp: jnp.arctan)
tanh = _keeping_dtype("tanh", lambda jnp: jnp.tanh)
floor = _keeping_dtype("floor", lambda jnp: jnp.floor)
