"""MLPMixerBlock: token-mixing MLP over the sequence axis, then a channel MLP."""

from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import TokenLinear, TokenMixer
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.MLPMixerBlock")
class MLPMixerBlock(TokenMixer):
    """One MLP-Mixer block on (batch, sequence, channels).

    `x = x + W2 · gelu(W1 · LN1(x))` with W1, W2 acting over the sequence axis
    (hidden width `tokens_mlp_dim`), then `x = x + MLP(LN2(x))` over channels
    (hidden width `channels_mlp_dim`). The two LayerNorms are separate layers.

    The token-mixing weights are (sequence_length, tokens_mlp_dim), so the
    sequence length is fixed when the block is built; another length raises a
    `ValueError`. Padded positions (Keras mask or `padding_mask`) are zeroed
    before token mixing, so they do not influence real positions. With
    `causal=True` both token-mixing matrices are triangular (output t sees
    inputs <= t); this needs `tokens_mlp_dim` = sequence length (leave it None).

    Args:
        tokens_mlp_dim: hidden width of the token-mixing MLP; None = sequence length.
            Defaults to `None`.
        channels_mlp_dim: hidden width of the channel MLP. Defaults to `256`.
        causal: bool, triangular token mixing. Defaults to `False`.
        dropout: dropout after each MLP. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the LayerNorms. Defaults to `1e-06`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import MLPMixerBlock

    x = keras.Input((16, 32))
    y = MLPMixerBlock(tokens_mlp_dim=32, channels_mlp_dim=64)(x)  # (None, 16, 32)
    ```

    References:
        - Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision",
          https://arxiv.org/abs/2105.01601
    """

    fixed_length = True

    def __init__(self, tokens_mlp_dim=None, channels_mlp_dim=256, causal=False, dropout=0.0,
                 layer_norm_epsilon=1e-6, seed=None, **kwargs):
        super().__init__(causal=causal, dropout=dropout, layer_norm_epsilon=layer_norm_epsilon,
                         seed=seed, **kwargs)
        self.tokens_mlp_dim = validation.positive_int("tokens_mlp_dim", tokens_mlp_dim, allow_none=True)
        self.channels_mlp_dim = validation.positive_int("channels_mlp_dim", channels_mlp_dim)

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        n, c = self.sequence_length, inputs_shape[-1]
        hidden = n if self.tokens_mlp_dim is None else self.tokens_mlp_dim
        if self.causal and hidden != n:
            raise ValueError(
                "causal=True needs a square token-mixing MLP: leave tokens_mlp_dim=None or set it "
                f"to the sequence length {n}. Received: tokens_mlp_dim={self.tokens_mlp_dim}"
            )
        policy = self.dtype_policy
        self.norm1 = self._make_norm("norm1")
        self.norm1.build(inputs_shape)
        self.token_in = TokenLinear(hidden, causal=self.causal, dtype=policy, name="token_in")
        self.token_in.build((None, n, c))
        self.token_out = TokenLinear(n, causal=self.causal, dtype=policy, name="token_out")
        self.token_out.build((None, hidden, c))
        self.norm2 = self._make_norm("norm2")
        self.norm2.build(inputs_shape)
        self.channel_in = self._make_dense(self.channels_mlp_dim, "channel_in", activation="gelu")
        self.channel_in.build(inputs_shape)
        self.channel_out = self._make_dense(c, "channel_out")
        self.channel_out.build((None, n, self.channels_mlp_dim))
        self.drop = self._make_dropout("dropout")

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        x = inputs
        h = self._zero_padding(self.norm1(x), m)
        h = self.token_out(ops.gelu(self.token_in(h), approximate=False))
        x = x + self.drop(h, training=training)
        h = self.channel_out(self.channel_in(self.norm2(x)))
        return x + self.drop(h, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(tokens_mlp_dim=self.tokens_mlp_dim, channels_mlp_dim=self.channels_mlp_dim)
        return config
