"""SynthesizerAttention: attention weights synthesised without query-key dot products."""

import keras
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers._token_mixing import TokenMixer, key_mask, masked_softmax
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask

MODES = ("random", "dense")


@keras_space_export("keras_space.layers.SynthesizerAttention")
class SynthesizerAttention(TokenMixer):
    """Synthesizer attention as a pre-norm residual block on (batch, sequence, channels).

    The (sequence x sequence) attention logits of each head come either from a
    learned parameter (`mode="random"`, Random Synthesizer: the same matrix for
    every input) or from each token alone (`mode="dense"`, Dense Synthesizer:
    `B_t = W2 · relu(W1 · h_t + b1) + b2`, one row of n logits per token):

        h = LN(x);  V = W_v · h  (split into heads)
        A = softmax(B)  over keys, per head
        y = x + W_o · (A · V)

    The sequence length is fixed at build time (the logits have one column per
    position); another length raises a `ValueError`. Padded keys get zero
    weight (so padded positions never influence real ones) and `causal=True`
    masks keys after the query. The softmax runs in float32.

    Args:
        num_heads: number of heads (must divide the channels). Defaults to `1`.
        mode: `"random"` or `"dense"`. Defaults to `"random"`.
        hidden_dim: width of the dense synthesiser's hidden layer; None = channels.
            Defaults to `None`.
        causal: bool. Defaults to `False`.
        dropout: dropout on the attention weights and the block output. Defaults to `0.0`.
        layer_norm_epsilon: epsilon of the LayerNorm. Defaults to `1e-06`.
        seed: dropout seed. Defaults to `None`.

    Call arguments:
        inputs: (batch, sequence, channels).
        padding_mask: optional (batch, sequence) mask, True/1 = real token.
        training: Python bool.

    Example:

    ```python
    import keras
    from keras_space.layers import SynthesizerAttention

    y = SynthesizerAttention(num_heads=4, mode="random", causal=True)(keras.Input((16, 32)))
    ```

    References:
        - Tay et al., "Synthesizer: Rethinking Self-Attention in Transformer
          Models", https://arxiv.org/abs/2005.00743
    """

    fixed_length = True

    def __init__(self, num_heads=1, mode="random", hidden_dim=None, causal=False, dropout=0.0,
                 layer_norm_epsilon=1e-6, seed=None, **kwargs):
        super().__init__(causal=causal, dropout=dropout, layer_norm_epsilon=layer_norm_epsilon,
                         seed=seed, **kwargs)
        self.num_heads = validation.positive_int("num_heads", num_heads)
        self.mode = validation.choice("mode", mode, MODES)
        self.hidden_dim = validation.positive_int("hidden_dim", hidden_dim, allow_none=True)

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_input_checks(inputs_shape)
        n, c = self.sequence_length, inputs_shape[-1]
        if c % self.num_heads:
            raise ValueError(
                f"`num_heads` must divide the channels ({c}). Received: num_heads={self.num_heads}"
            )
        self.norm = self._make_norm("norm")
        self.norm.build(inputs_shape)
        if self.mode == "random":
            self.logits = self.add_weight(
                name="logits", shape=(self.num_heads, n, n),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        else:
            hidden = c if self.hidden_dim is None else self.hidden_dim
            self.synth_in = self._make_dense(hidden, "synth_in", activation="relu")
            self.synth_in.build(inputs_shape)
            self.synth_out = self._make_dense(self.num_heads * n, "synth_out")
            self.synth_out.build((None, n, hidden))
        self.value = self._make_dense(c, "value")
        self.value.build(inputs_shape)
        self.proj_out = self._make_dense(c, "proj_out")
        self.proj_out.build(inputs_shape)
        self.drop = self._make_dropout("dropout")

    def _attention_logits(self, h):
        n, heads = self.sequence_length, self.num_heads
        if self.mode == "random":
            return ops.expand_dims(ops.convert_to_tensor(self.logits), 0)  # (1, h, n, n)
        b = self.synth_out(self.synth_in(h))  # (batch, n_q, heads * n_k)
        b = ops.reshape(b, (-1, n, heads, n))
        return ops.transpose(b, (0, 2, 1, 3))  # (batch, heads, n_q, n_k)

    def call(self, inputs, padding_mask=None, training=None, mask=None):
        inputs = self._check_inputs(inputs)
        m = resolve_padding_mask(mask, padding_mask, inputs)
        n, heads = self.sequence_length, self.num_heads
        h = self.norm(inputs)
        allowed = key_mask(m, self.causal, n, n)
        weights = masked_softmax(
            self._attention_logits(h), None if allowed is None else allowed[:, None]
        )
        weights = ops.broadcast_to(weights, (ops.shape(inputs)[0], heads, n, n))
        weights = self.drop(ops.cast(weights, self.compute_dtype), training=training)
        v = self._zero_padding(self.value(h), m)  # weight 0 times a NaN value is NaN
        v = ops.reshape(v, (-1, n, heads, inputs.shape[-1] // heads))
        out = ops.einsum("bhqk,bkhd->bqhd", weights, v)
        out = self.proj_out(ops.reshape(out, (-1, n, inputs.shape[-1])))
        return inputs + self.drop(out, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, mode=self.mode, hidden_dim=self.hidden_dim)
        return config
