"""`keras.ops` functions that keep float64 on JAX (internal).

Keras 3.15's type promotion maps 64-bit dtypes to 32-bit ones on every backend
but TensorFlow (`keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE`, "to be
aligned with JAX's default behavior"), also when JAX runs in x64 mode. The ops
that promote their input through it compute float64 data in float32: among
those used here `mean` (accumulated in float32), `norm`, `sin`, `cos`,
`arccos`, `arctan`, `tanh` and `floor`. These wrappers call jax.numpy directly
on JAX (same semantics, the input's dtype kept) and `keras.ops` elsewhere.
"""

import keras
from keras import ops


def _keeping_dtype(name, jax_name=None):
    keras_op = getattr(ops, name)

    def op(x, *args, **kwargs):
        if keras.backend.backend() == "jax":
            import jax.numpy as jnp

            x = jnp.asarray(x)
            if x.dtype == jnp.float64:
                if name == "norm":
                    return jnp.linalg.norm(x, *args, **kwargs)
                return getattr(jnp, jax_name or name)(x, *args, **kwargs)
        return keras_op(x, *args, **kwargs)

    op.__name__ = name
    op.__doc__ = f"`keras.ops.{name}`, keeping float64 on JAX."
    return op


mean = _keeping_dtype("mean")
norm = _keeping_dtype("norm")
sin = _keeping_dtype("sin")
cos = _keeping_dtype("cos")
arccos = _keeping_dtype("arccos")
arctan = _keeping_dtype("arctan")
tanh = _keeping_dtype("tanh")
floor = _keeping_dtype("floor")
