"""ResMLPBlock: Affine-normalised linear token mixing and channel MLP, with LayerScale."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import TokenLinear, TokenMixer
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.ResMLPBlock")
class ResMLPBlock(TokenMixer):
    """One ResMLP block on (batch, sequence, channels).

    With `Aff(x) = alpha * x + beta` (per channel) instead of LayerNorm:

        z = x + ls1 * (A · Aff1(x))          A: (sequence, sequence) linear map + bias
        y = z + ls2 * (C · gelu(B · Aff2(z)))  channel MLP, hidden width channels_mlp_dim

    `ls1`, `ls2` are per-channel LayerScale vectors initialised to
    `layerscale_init` (0.1 for shallow nets, smaller for deep ones), Aff starts
    as the identity. The sequence length is fixed at build time; padded
    positions are zeroed after Aff1 (Aff adds beta to them) so they do not
    reach real positions; `causal=True` makes A triangular.

    Args:
        channels_mlp_dim: hidden width of the channel MLP. Defaults to `256`.
        layerscale_init: initial LayerScale value. Defaults to `0.1`.
        causal: bool, triangular token mixing. Defaults to `False`.
        dropout: dropout on both branches. Defaults to `0.0`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import ResMLPBlock

    y = ResMLPBlock(channels_mlp_dim=128)(keras.Input((16, 32)))
    ```

    References:
        - Touvron et al., "ResMLP: Feedforward networks for image classification
          with data-efficient training", https://arxiv.org/abs/2105.03404
    """

    fixed_length = True

    def __init__(self, channels_mlp_dim=256, layerscale_init=0.1, causal=False, dropout=0.0,
                 seed=None, **kwargs):
        super().__init__(causal=causal, dropout=dropout, seed=seed, **kwargs)
        self.channels_mlp_dim = validation.positive_int("channels_mlp_dim", channels_mlp_dim)
        self.layerscale_init = validation.finite_float("layerscale_init", layerscale_init)

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        n, c = self.sequence_length, inputs_shape[-1]
        for i in (1, 2):
            setattr(self, f"alpha{i}", self.add_weight(name=f"aff{i}_alpha", shape=(c,), initializer="ones"))
            setattr(self, f"beta{i}", self.add_weight(name=f"aff{i}_beta", shape=(c,), initializer="zeros"))
            setattr(self, f"scale{i}", self.add_weight(
                name=f"layerscale{i}", shape=(c,),
                initializer=keras.initializers.Constant(self.layerscale_init)))
        self.token_mix = TokenLinear(n, causal=self.causal, dtype=self.dtype_policy, name="token_mix")
        self.token_mix.build((None, n, c))
        self.channel_in = self._make_dense(self.channels_mlp_dim, "channel_in", activation="gelu")
        self.channel_in.build(inputs_shape)
        self.channel_out = self._make_dense(c, "channel_out")
        self.channel_out.build((None, n, self.channels_mlp_dim))
        self.drop = self._make_dropout("dropout")

    def _affine(self, x, i):
        dt = x.dtype
        return x * ops.cast(getattr(self, f"alpha{i}"), dt) + ops.cast(getattr(self, f"beta{i}"), dt)

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        x = inputs
        h = self.token_mix(self._zero_padding(self._affine(x, 1), m))
        x = x + ops.cast(self.scale1, x.dtype) * self.drop(h, training=training)
        h = self.channel_out(self.channel_in(self._affine(x, 2)))
        return x + ops.cast(self.scale2, x.dtype) * self.drop(h, training=training)

    def get_config(self):
        config = super().get_config()
        config.pop("layer_norm_epsilon")
        config.update(channels_mlp_dim=self.channels_mlp_dim, layerscale_init=self.layerscale_init)
        return config
