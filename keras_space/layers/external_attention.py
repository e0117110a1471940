"""ExternalAttention: attention to two small learned memories with double normalisation."""

from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import NEG_INF, TokenMixer
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.ExternalAttention")
class ExternalAttention(TokenMixer):
    """External attention as a pre-norm residual block on (batch, sequence, channels).

        q = W_q · LN(x)                              (batch, n, channels)
        a = q · M_kᵀ                                 (batch, n, memory_units)
        a = softmax over the *sequence* axis          (each memory slot's weights over tokens)
        a = a / sum over the memory axis             (l1 "double normalisation")
        y = x + W_o · (a · M_v)

    M_k and M_v are (memory_units, channels) learned memories shared by all
    inputs: cost O(n · memory_units · channels), linear in the sequence length,
    and any length works. Padded positions are left out of the softmax over
    the sequence (so they do not influence real positions) and give zero
    attention rows. `causal=True` normalises each position over the positions
    up to it only (a cumulative softmax, computed with a log-sum-exp scan), so
    position t never sees later ones. The normalisations run in float32.

    Args:
        memory_units: S, the number of memory slots (the paper uses 64). Defaults to `64`.
        causal: bool. Defaults to `False`.
        dropout: dropout on the block output. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the LayerNorm. Defaults to `1e-06`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import ExternalAttention

    y = ExternalAttention(memory_units=64)(keras.Input((None, 32)))
    ```

    References:
        - Guo et al., "Beyond Self-attention: External Attention using Two
          Linear Layers for Visual Tasks", https://arxiv.org/abs/2105.02358
    """

    def __init__(self, memory_units=64, causal=False, dropout=0.0, layer_norm_epsilon=1e-6,
                 seed=None, **kwargs):
        super().__init__(causal=causal, dropout=dropout, layer_norm_epsilon=layer_norm_epsilon,
                         seed=seed, **kwargs)
        self.memory_units = validation.positive_int("memory_units", memory_units)

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        c = inputs_shape[-1]
        memory_shape = tuple(inputs_shape[:-1]) + (self.memory_units,)
        self.norm = self._make_norm("norm")
        self.norm.build(inputs_shape)
        self.query = self._make_dense(c, "query")
        self.query.build(inputs_shape)
        self.memory_key = self._make_dense(self.memory_units, "memory_key", use_bias=False)
        self.memory_key.build(inputs_shape)
        self.memory_value = self._make_dense(c, "memory_value", use_bias=False)
        self.memory_value.build(memory_shape)
        self.proj_out = self._make_dense(c, "proj_out")
        self.proj_out.build(inputs_shape)
        self.drop = self._make_dropout("dropout")

    def _attention(self, x, m):
        """The doubly normalised (batch, n, memory_units) attention, float32."""
        logits = ops.cast(self.memory_key(self.query(self.norm(x))), "float32")
        if m is not None:
            logits = ops.where(m[..., None], logits, NEG_INF)
        if self.causal:
            running = ops.associative_scan(ops.logaddexp, logits, axis=1)
            running = ops.reshape(running, ops.shape(logits))  # the scan loses the static shape
            attn = ops.exp(logits - running)
        else:
            attn = ops.softmax(logits, axis=1)
        if m is not None:
            attn = ops.where(m[..., None], attn, 0.0)
        return attn / (ops.sum(attn, axis=-1, keepdims=True) + 1e-9)

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        attn = ops.cast(self._attention(inputs, m), self.compute_dtype)
        out = self.proj_out(self.memory_value(attn))
        return inputs + self.drop(out, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(memory_units=self.memory_units)
        return config
