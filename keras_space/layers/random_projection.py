"""RandomProjection: a fixed Johnson-Lindenstrauss projection layer."""

import math

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

KINDS = ("gaussian", "sparse", "orthogonal")


def _projection_matrix(input_dim, units, kind, density, seed):
    """A (input_dim, units) JL matrix with E||x A||^2 = ||x||^2.

    gaussian: i.i.d. N(0, 1/units). sparse (Achlioptas / Li et al.): entries
    +-1/sqrt(density * units) with probability density/2 each, else 0.
    orthogonal: sqrt(input_dim / units) times a matrix with orthonormal
    columns when units <= input_dim (orthonormal rows, norm-preserving,
    otherwise).
    """
    if kind == "gaussian":
        return keras.random.normal((input_dim, units), stddev=1.0 / math.sqrt(units), seed=seed)
    if kind == "sparse":
        u = keras.random.uniform((input_dim, units), seed=seed)
        value = 1.0 / math.sqrt(density * units)
        return ops.where(
            u < density / 2.0, -value, ops.where(u < density, value, 0.0)
        )
    tall = input_dim >= units
    g = keras.random.normal((input_dim, units) if tall else (units, input_dim), seed=seed)
    q, r = ops.qr(g, mode="reduced")
    q = q * ops.sign(ops.diagonal(r))[None, :]  # Haar-distributed
    if tall:
        return q * math.sqrt(input_dim / units)
    return ops.transpose(q)


def _resolve_density(density, input_dim):
    return 1.0 / math.sqrt(input_dim) if density == "auto" else float(density)


@keras_space_export("keras_space.layers.RandomProjection")
class RandomProjection(keras.layers.Layer):
    """Project the last axis to `units` dimensions with a fixed random matrix.

    By the Johnson-Lindenstrauss lemma, N points keep all pairwise squared
    distances within (1 +- eps) once units > 24 log N / eps^2 (see
    `keras_space.ops.jl_min_dim`). The matrix is a non-trainable weight: it
    is the same after `.keras` save/load and in an exported SavedModel.

    Args:
        units: output dimension.
        kind: "gaussian" (N(0, 1/units) entries), "sparse" (Achlioptas/Li:
            +-1/sqrt(density*units) with probability density, else 0) or
            "orthogonal" (scaled orthonormal columns). Defaults to `"gaussian"`.
        density: fraction of non-zeros for "sparse"; "auto" is
            1/sqrt(input_dim) (Li, Hastie & Church). Defaults to `"auto"`.
        seed: int seed for the matrix (None: random). Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (..., input_dim).

    Example:

    ```python
    import numpy as np
    from keras_space.layers import RandomProjection
    from keras_space.ops import jl_min_dim

    x = np.random.normal(size=(1000, 4096)).astype("float32")
    layer = RandomProjection(jl_min_dim(1000, eps=0.5), seed=0)
    y = layer(x)  # pairwise distances kept within 50 %
    ```

    References:
        - Achlioptas, "Database-friendly random projections",
          https://doi.org/10.1016/S0022-0000(03)00025-4
        - Li, Hastie & Church, "Very sparse random projections",
          https://doi.org/10.1145/1150402.1150436
        - https://kexue.fm/archives/8679
    """

    def __init__(self, units, kind="gaussian", density="auto", seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = validation.positive_int("units", units)
        self.kind = validation.choice("kind", kind, KINDS)
        if density != "auto":
            density = validation.positive_float("density", density, maximum=1.0)
        self.density = density
        self.seed = validation.non_negative_int("seed", seed, allow_none=True)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"RandomProjection needs a known last dimension. Received: input_shape={input_shape}"
            )
        matrix = _projection_matrix(
            input_dim,
            self.units,
            self.kind,
            _resolve_density(self.density, input_dim),
            self.seed_generator,
        )
        if self.kind == "sparse" and not bool(
            keras.ops.convert_to_numpy(keras.ops.all(keras.ops.any(matrix != 0, axis=0)))
        ):
            raise ValueError(
                f"`density`={self.density} leaves an output dimension without a single non-zero "
                f"weight for input dimension {input_dim} (it would always output 0). Use a "
                f"density of at least a few / input_dim, or 'auto'. Received: density={self.density}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=lambda shape, dtype=None: ops.cast(matrix, dtype or "float32"),
            trainable=False,
        )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        return ops.matmul(inputs, self.kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kind": self.kind,
            "density": self.density,
            "seed": self.seed,
        }
