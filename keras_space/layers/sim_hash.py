"""SimHash: multi-table sign-random-projection hashing."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

OUTPUTS = ("bits", "packed")


@keras_space_export("keras_space.layers.SimHash")
class SimHash(keras.layers.Layer):
    """Sign-random-projection (SimHash) codes, in several independent tables.

    bit_i = [<w_i, x> > 0] with w_i ~ N(0, I): two vectors at angle theta
    disagree on a bit with probability theta / pi, so the fraction of equal
    bits estimates the cosine (`keras_space.ops.hamming_similarity`).

    Args:
        num_bits: bits per table (<= 62 for `output_mode="packed"`).
        num_tables: independent tables (for bucketed LSH retrieval). Defaults to `1`.
        output_mode: "bits" gives int32 0/1 codes of shape (..., num_tables,
            num_bits); "packed" gives one int64 per table, sum_i bit_i 2^i,
            of shape (..., num_tables). Defaults to `"bits"`.
        seed: int seed of the hyperplanes (None: random). Defaults to `None`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float tensor (..., input_dim).

    Example:

    ```python
    import numpy as np
    from keras_space.layers import SimHash
    from keras_space.ops import hamming_similarity

    x = np.random.normal(size=(100, 384)).astype("float32")
    codes = SimHash(num_bits=256, seed=0)(x)[:, 0]  # (100, 256)
    sim = hamming_similarity(codes[:5], codes, pairwise=True)  # (5, 100)
    ```

    References:
        - Charikar, "Similarity estimation techniques from rounding
          algorithms", https://doi.org/10.1145/509907.509965
        - https://kexue.fm/archives/8679
    """

    def __init__(self, num_bits, num_tables=1, output_mode="bits", seed=None, **kwargs):
        super().__init__(**kwargs)
        num_bits = validation.positive_int("num_bits", num_bits)
        num_tables = validation.positive_int("num_tables", num_tables)
        validation.choice("output_mode", output_mode, OUTPUTS)
        seed = validation.non_negative_int("seed", seed, allow_none=True)
        if output_mode == "packed" and num_bits > 62:
            raise ValueError(
                "`output_mode='packed'` holds at most 62 bits per table in an int64. "
                f"Received: num_bits={num_bits}"
            )
        self.num_bits = num_bits
        self.num_tables = num_tables
        self.output_mode = output_mode
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"SimHash needs a known last dimension. Received: input_shape={input_shape}")
        planes = keras.random.normal(
            (input_dim, self.num_tables * self.num_bits), seed=self.seed_generator
        )
        self.hyperplanes = self.add_weight(
            name="hyperplanes",
            shape=(input_dim, self.num_tables * self.num_bits),
            initializer=lambda shape, dtype=None: ops.cast(planes, dtype or "float32"),
            trainable=False,
        )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs):
        # Signs in float32: a float16 product can round a small projection to 0.
        inputs = validation.all_finite("inputs", ops.cast(inputs, "float32"))  # NaN has no code
        proj = ops.matmul(inputs, ops.cast(self.hyperplanes, "float32"))
        shape = ops.shape(proj)[:-1] + (self.num_tables, self.num_bits)
        bits = ops.cast(ops.reshape(proj > 0, shape), "int32")
        if self.output_mode == "bits":
            return bits
        weights = ops.cast(2 ** ops.arange(self.num_bits, dtype="int64"), "int64")
        return ops.sum(ops.cast(bits, "int64") * weights, axis=-1)

    def compute_output_shape(self, input_shape):
        lead = tuple(input_shape[:-1]) + (self.num_tables,)
        return lead + (self.num_bits,) if self.output_mode == "bits" else lead

    def compute_output_spec(self, inputs):
        dtype = "int32" if self.output_mode == "bits" else "int64"
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype=dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "num_bits": self.num_bits,
            "num_tables": self.num_tables,
            "output_mode": self.output_mode,
            "seed": self.seed,
        }
