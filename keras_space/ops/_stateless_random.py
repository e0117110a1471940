"""Random draws from an explicit seed tensor, on every backend (internal).

`keras.random` draws from a `SeedGenerator` (or an int); the vMF samplers also
need the stateless form: a seed tensor split into independent seeds, or
folded with a loop counter inside a while loop. These few functions give it,
with TensorFlow's `tf.random.stateless_*` ops or JAX's `jax.random` keys (the
same uint32 pair that Keras's `SeedGenerator` holds on JAX).
"""

import keras
import numpy as np


def _backend():
    name = keras.backend.backend()
    if name not in ("tensorflow", "jax"):
        raise NotImplementedError(f"stateless sampling on the {name!r} backend")
    return name


def seed_tensor(seed):
    """A seed tensor from a `SeedGenerator` (drawing its next state), a pair of ints
    or a seed tensor."""
    if isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    if _backend() == "jax":
        import jax.numpy as jnp

        return jnp.asarray(seed).astype("uint32")
    import tensorflow as tf

    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int32:  # Keras's own mapping of its int64 state onto the int32 seeds
        seed = tf.cast(tf.math.floormod(tf.cast(seed, tf.int64), np.int64(2**31 - 2)), tf.int32)
    return seed


def split(seed, n):
    """`n` independent seeds from `seed` (a list)."""
    if _backend() == "jax":
        import jax

        keys = jax.random.split(seed, n)
    else:
        import tensorflow as tf

        keys = tf.random.experimental.stateless_split(seed, n)
    return [keys[i] for i in range(n)]


def fold_in(seed, i):
    """A new seed from `seed` and an int (tensor) `i`."""
    if _backend() == "jax":
        import jax

        return jax.random.fold_in(seed, i)
    import tensorflow as tf

    return tf.random.experimental.stateless_fold_in(seed, i)


def uniform(shape, seed, dtype, maxval=1.0):
    if _backend() == "jax":
        import jax

        return jax.random.uniform(seed, shape, dtype, 0.0, maxval)
    import tensorflow as tf

    return tf.random.stateless_uniform(shape, seed, maxval=maxval, dtype=dtype)


def normal(shape, seed, dtype):
    if _backend() == "jax":
        import jax

        return jax.random.normal(seed, shape, dtype)
    import tensorflow as tf

    return tf.random.stateless_normal(shape, seed, dtype=dtype)


def gamma(shape, seed, alpha, dtype):
    """Gamma(alpha, 1) draws (no reparameterisation gradient: callers stop it)."""
    if _backend() == "jax":
        import jax

        return jax.random.gamma(seed, alpha, shape, dtype)
    import tensorflow as tf

    return tf.random.stateless_gamma(shape, seed, alpha=alpha, dtype=dtype)
