"""FNetBlock: Fourier token mixing (real part of a 2-D FFT) and a feed-forward layer."""

from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import TokenMixer
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask


@keras_space_export("keras_space.layers.FNetBlock")
class FNetBlock(TokenMixer):
    """One FNet encoder block on (batch, sequence, channels), post-norm as in the paper:

        y = LN1(x + Re(FFT_seq(FFT_channels(x))))
        out = LN2(y + W2 · gelu(W1 · y))

    The FFT runs in float32 (complex64) whatever the compute dtype, so the block
    works under `mixed_float16`/`mixed_bfloat16`; it has no weights over the
    sequence axis, so any sequence length works, in O(n log n).

    Padding: the Fourier transform mixes every position with every other, so
    FNet cannot exclude padding the way attention does. With a padding mask
    (Keras mask or `padding_mask`) the padded positions are *zeroed* before the
    FFT: what they contain then has no influence on the real positions, but the
    real positions' outputs still depend on how much padding there is (the
    transform length), exactly as in FNet's own zero-padded training. Without
    a mask the padded vectors are mixed in as they are. There is no causal
    variant (the DFT is not triangular).

    Args:
        ffn_dim: hidden width of the feed-forward layer. Defaults to `256`.
        dropout: dropout on the feed-forward output. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the LayerNorms. Defaults to `1e-12`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import FNetBlock

    y = FNetBlock(ffn_dim=128)(keras.Input((None, 32)))  # any sequence length
    ```

    References:
        - Lee-Thorp et al., "FNet: Mixing Tokens with Fourier Transforms",
          https://arxiv.org/abs/2105.03824
    """

    def __init__(self, ffn_dim=256, dropout=0.0, layer_norm_epsilon=1e-12, seed=None, **kwargs):
        if "causal" in kwargs:
            raise ValueError(
                "FNetBlock has no causal variant: the Fourier transform mixes every position "
                f"with every other. Received: causal={kwargs['causal']!r}"
            )
        super().__init__(dropout=dropout, layer_norm_epsilon=layer_norm_epsilon, seed=seed, **kwargs)
        self.ffn_dim = validation.positive_int("ffn_dim", ffn_dim)

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        c = inputs_shape[-1]
        self.norm1 = self._make_norm("norm1")
        self.norm1.build(inputs_shape)
        self.ffn_in = self._make_dense(self.ffn_dim, "ffn_in", activation="gelu")
        self.ffn_in.build(inputs_shape)
        self.ffn_out = self._make_dense(c, "ffn_out")
        self.ffn_out.build(tuple(inputs_shape[:-1]) + (self.ffn_dim,))
        self.norm2 = self._make_norm("norm2")
        self.norm2.build(inputs_shape)
        self.drop = self._make_dropout("dropout")

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        x32 = ops.cast(self._zero_padding(inputs, m), "float32")
        real, _ = ops.fft2((x32, ops.zeros_like(x32)))  # over the last two axes: sequence, channels
        y = self.norm1(inputs + ops.cast(real, inputs.dtype))
        h = self.ffn_out(self.ffn_in(y))
        return self.norm2(y + self.drop(h, training=training))

    def get_config(self):
        config = super().get_config()
        config.pop("causal")
        config.update(ffn_dim=self.ffn_dim)
        return config
