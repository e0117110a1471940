"""GMLPBlock: gMLP's spatial gating unit (optionally with aMLP's tiny attention)."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import TokenLinear, TokenMixer, key_mask
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.GMLPBlock")
class GMLPBlock(TokenMixer):
    """One gMLP block on (batch, sequence, channels).

        h = gelu(U · LN(x))                      U: channels -> ffn_dim
        [z1, z2] = split(h)                      two halves of ffn_dim
        gate = W · LN_g(z2) + b  (+ tiny_attention(LN(x)) for aMLP)
        y = x + V · (z1 * gate)                  V: ffn_dim / 2 -> channels

    W is a (sequence, sequence) matrix over the sequence axis initialised near
    zero (uniform in +-`spatial_init_scale` / sequence) and b at one, so the
    block starts close to a plain FFN. The residual is added to the block's
    input, before normalisation. The sequence length is fixed at build time.
    Padded positions are zeroed before W (and are masked keys of the tiny
    attention); `causal=True` makes W triangular and the tiny attention causal.

    Args:
        ffn_dim: width of the gated projection (even). Defaults to `256`.
        tiny_attention_dim: None for gMLP; an int (aMLP uses 64) adds a
            single-head attention of that size whose output is added to the gate.
            Defaults to `None`.
        spatial_init_scale: W is initialised uniform in +-scale / sequence.
            Defaults to `0.001`.
        causal: bool. Defaults to `False`.
        dropout: dropout on the block output. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the LayerNorms. Defaults to `1e-06`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import GMLPBlock

    y = GMLPBlock(ffn_dim=128, tiny_attention_dim=64)(keras.Input((16, 32)))  # aMLP
    ```

    References:
        - Liu et al., "Pay Attention to MLPs", https://arxiv.org/abs/2105.08050
    """

    fixed_length = True

    def __init__(self, ffn_dim=256, tiny_attention_dim=None, spatial_init_scale=1e-3, causal=False,
                 dropout=0.0, layer_norm_epsilon=1e-6, seed=None, **kwargs):
        super().__init__(causal=causal, dropout=dropout, layer_norm_epsilon=layer_norm_epsilon,
                         seed=seed, **kwargs)
        self.ffn_dim = validation.positive_int("ffn_dim", ffn_dim)
        if self.ffn_dim % 2:
            raise ValueError(
                f"`ffn_dim` must be even (it is split in two). Received: ffn_dim={ffn_dim}"
            )
        self.tiny_attention_dim = validation.positive_int(
            "tiny_attention_dim", tiny_attention_dim, allow_none=True
        )
        self.spatial_init_scale = validation.non_negative_float(
            "spatial_init_scale", spatial_init_scale
        )

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        n, c = self.sequence_length, inputs_shape[-1]
        half = self.ffn_dim // 2
        self.norm = self._make_norm("norm")
        self.norm.build(inputs_shape)
        self.proj_in = self._make_dense(self.ffn_dim, "proj_in", activation="gelu")
        self.proj_in.build(inputs_shape)
        self.gate_norm = self._make_norm("gate_norm")
        self.gate_norm.build((None, n, half))
        eps = self.spatial_init_scale / n
        self.spatial = TokenLinear(
            n, causal=self.causal,
            kernel_initializer=keras.initializers.RandomUniform(-eps, eps),
            bias_initializer="ones", dtype=self.dtype_policy, name="spatial",
        )
        self.spatial.build((None, n, half))
        self.attention = None
        if self.tiny_attention_dim is not None:
            self.attention = keras.layers.MultiHeadAttention(
                num_heads=1, key_dim=self.tiny_attention_dim, output_shape=half,
                dtype=self.dtype_policy, name="tiny_attention",
            )
            self.attention.build(inputs_shape, inputs_shape)
        self.proj_out = self._make_dense(c, "proj_out")
        self.proj_out.build((None, n, half))
        self.drop = self._make_dropout("dropout")

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        x = self.norm(inputs)
        z1, z2 = ops.split(self.proj_in(x), 2, axis=-1)
        gate = self.spatial(self._zero_padding(self.gate_norm(z2), m))
        if self.attention is not None:
            allowed = key_mask(m, self.causal, self.sequence_length, self.sequence_length)
            kv = self._zero_padding(x, m)  # masked keys still multiply their values by 0
            gate = gate + self.attention(x, kv, attention_mask=allowed)
        out = self.proj_out(z1 * gate)
        return inputs + self.drop(out, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            ffn_dim=self.ffn_dim,
            tiny_attention_dim=self.tiny_attention_dim,
            spatial_init_scale=self.spatial_init_scale,
        )
        return config
