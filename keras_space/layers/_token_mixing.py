"""Shared pieces of the attention-free token mixers (private).

- `TokenMixer`: base class. Residual blocks on (batch, sequence, channels);
  the padding mask comes from an upstream Keras mask or the `padding_mask`
  call argument and is passed through unchanged; fixed-length mixers learn
  their sequence length at build time and refuse any other.
- `TokenLinear`: a learned linear map over the sequence axis,
  out[:, j] = sum_i W[i, j] x[:, i] + b[j], with an optional causal
  (upper-triangular W: output j sees inputs i <= j) constraint.
- `masked_softmax`: softmax over keys in float32 with padding and causal masks.
"""

import keras
import numpy as np
from keras import ops

from keras_space.utils import validation

NEG_INF = -1e9


class TokenMixer(keras.layers.Layer):
    """Base of the token-mixer blocks: masks, fixed length, config helpers."""

    fixed_length = False

    def __init__(self, causal=False, dropout=0.0, layer_norm_epsilon=1e-6, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.causal = validation.strict_bool("causal", causal)
        self.dropout = validation.probability("dropout", dropout)
        self.layer_norm_epsilon = validation.positive_float("layer_norm_epsilon", layer_norm_epsilon)
        self.seed = validation.non_negative_int("seed", seed, allow_none=True)
        self.supports_masking = True
        self.sequence_length = None

    def _build_input_checks(self, inputs_shape):
        """Check the build shape and fix the input spec: rank 3, these channels (and length)."""
        if len(inputs_shape) != 3:
            raise ValueError(
                f"{type(self).__name__} expects (batch, sequence, channels) inputs. "
                f"Received: shape {tuple(inputs_shape)}"
            )
        if inputs_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} needs a known channel dimension. Received: shape "
                f"{tuple(inputs_shape)}"
            )
        axes = {-1: int(inputs_shape[-1])}
        if self.fixed_length:
            if inputs_shape[1] is None:
                raise ValueError(
                    f"{type(self).__name__} learns a matrix over the sequence axis, so the "
                    "sequence length must be known when it is built. Received: shape "
                    f"{tuple(inputs_shape)}; use keras.Input((sequence_length, channels))."
                )
            if inputs_shape[1] == 0:
                raise ValueError(
                    f"{type(self).__name__} needs a sequence of at least one token: it learns a "
                    f"(length x length) matrix. Received: shape {tuple(inputs_shape)}"
                )
            self.sequence_length = int(inputs_shape[1])
        # Keras checks every later call against this: another rank or width is refused
        # naming the expected and received shapes (the length: `_check_inputs`).
        self.input_spec = keras.InputSpec(ndim=3, axes=axes)

    def _check_inputs(self, inputs):
        """`inputs`, refused if they are integers or (fixed length) of another length.

        The input spec checks static shapes; a length only known at run time (a traced
        function without a static shape) is checked in the graph.
        """
        if not keras.backend.is_float_dtype(inputs.dtype):
            raise ValueError(
                f"{type(self).__name__} mixes floating-point embeddings (batch, sequence, "
                f"channels). Received: inputs of dtype {keras.backend.standardize_dtype(inputs.dtype)}; "
                "embed token ids first (e.g. keras.layers.Embedding) or cast the features."
            )
        if not self.fixed_length:
            return inputs
        length = ops.shape(inputs)[1]
        message = (
            f"the length it was built for ({type(self).__name__} '{self.name}' was built for sequence length "
            f"{self.sequence_length}); pad or crop to it (with a padding mask), or build a new layer"
        )
        if isinstance(length, (int, np.integer)):
            if length != self.sequence_length:
                raise ValueError(f"`inputs` must have {message}. Received: inputs of length {length}")
            return inputs
        return validation.holds("inputs", inputs, ops.equal(length, self.sequence_length), message)

    def _make_norm(self, name):
        return keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _make_dense(self, units, name, activation=None, **kwargs):
        return keras.layers.Dense(
            units, activation=activation, dtype=self.dtype_policy, name=name, **kwargs
        )

    def _make_dropout(self, name):
        return keras.layers.Dropout(self.dropout, seed=self.seed, dtype=self.dtype_policy, name=name)

    def _zero_padding(self, x, m):
        """Zero the padded positions so they cannot leak into other positions.

        A select, not a product: padded content may be NaN or inf (inf * 0 = NaN).
        """
        if m is None:
            return x
        return ops.where(m[..., None], x, ops.zeros_like(x))

    def compute_mask(self, inputs, mask=None, padding_mask=None):
        return mask

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            causal=self.causal,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            seed=self.seed,
        )
        return config


class TokenLinear(keras.layers.Layer):
    """out[:, j, :] = sum_i kernel[i, j] * x[:, i, :] + bias[j] (optionally causal)."""

    def __init__(self, units, causal=False, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.causal = causal
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, inputs_shape):
        n = inputs_shape[1]
        if self.causal and self.units != n:
            raise ValueError(
                f"A causal token-mixing matrix must be square: units={self.units} for "
                f"sequence length {n}."
            )
        self.kernel = self.add_weight(name="kernel", shape=(n, self.units),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.units,),
                                    initializer=self.bias_initializer)
        if self.causal:
            self._tri = np.triu(np.ones((n, n), dtype="float32"))

    def effective_kernel(self):
        kernel = ops.convert_to_tensor(self.kernel)
        if self.causal:
            kernel = kernel * ops.cast(self._tri, kernel.dtype)
        return kernel

    def call(self, x):
        kernel = ops.cast(self.effective_kernel(), x.dtype)
        out = ops.einsum("bic,ij->bjc", x, kernel)
        return out + ops.cast(self.bias, x.dtype)[None, :, None]

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], self.units, inputs_shape[2])


def key_mask(padding, causal, q_len, k_len):
    """Boolean (batch or 1, q_len, k_len) mask of allowed (query, key) pairs, or None."""
    allowed = None
    if padding is not None:
        allowed = ops.expand_dims(padding, 1)  # (b, 1, k)
    if causal:
        tri = ops.convert_to_tensor(np.tril(np.ones((q_len, k_len), dtype=bool)))[None]
        allowed = tri if allowed is None else ops.logical_and(allowed, tri)
    return allowed


def masked_softmax(logits, allowed, axis=-1):
    """Softmax in float32 with disallowed entries removed (rows with none allowed give 0)."""
    logits = ops.cast(logits, "float32")
    if allowed is None:
        return ops.softmax(logits, axis=axis)
    logits = ops.where(allowed, logits, NEG_INF)
    weights = ops.softmax(logits, axis=axis)
    return ops.where(allowed, weights, 0.0)
