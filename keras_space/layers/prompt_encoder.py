"""PromptEncoder: P-tuning's trainable virtual tokens, as a prefix or in a template."""

import keras
import numpy as np
from keras import ops
from keras.src.backend.common.masking import set_keras_mask  # what Keras uses itself

from keras_space.api_export import keras_space_export
from keras_space.utils import validation

ENCODERS = ("mlp", "lstm", "lstm_mlp", "none")
_RESIDUAL = ("mlp", "lstm")


@keras_space_export("keras_space.layers.PromptEncoder")
class PromptEncoder(keras.layers.Layer):
    """Continuous virtual tokens (P-tuning) spliced into a token-embedding sequence.

    The layer owns a table of `num_virtual_tokens` embeddings. Before they are
    spliced in, they are re-parameterised by an encoder, as in the P-tuning
    paper: `"mlp"` (three Dense layers, ReLU) or `"lstm"` (a bidirectional LSTM
    over the virtual-token sequence followed by two Dense layers), or used as
    they are (`"none"`). These encoders are residual and their last Dense layer
    starts at zero, so at initialisation the prompt *is* the table:
    initialising the table from the embeddings of anchor tokens
    (`initialize_from_tokens`) gives exactly those embeddings as the first
    prompt. `"lstm_mlp"` is the paper's own encoder as HF PEFT implements it
    (`PromptEncoderReparameterizationType.LSTM`): two stacked bidirectional
    LSTM layers, then a two-layer MLP (Dense + ReLU, Dense), not residual;
    anchor tokens then initialise its input table (PEFT's embedding), so the
    first prompt is the encoder's image of the anchors.

    Two modes:

    - prefix (`placeholder_ids=None`): `layer(embeddings)` prepends the prompt,
      (batch, seq, dim) -> (batch, num_virtual_tokens + seq, dim). The Keras
      mask (from an upstream layer, or the `padding_mask` call argument) is
      extended with `num_virtual_tokens` real positions in front
      (`compute_mask`, `extend_padding_mask`).
    - template (`placeholder_ids=[id_1, ..., id_n]`, bert4keras style, e.g. the
      ids of `[unused1]`...`[unusedN]`): `layer(embeddings, token_ids)` replaces
      the embedding at every position whose token id is `id_j` by virtual token
      `j`, wherever those positions are; other positions and the mask pass
      through unchanged.

    `freeze()` returns the inference form: an `encoder="none"` layer whose table
    is the computed prompt, giving bit-identical outputs without the encoder.
    The prompt is computed in float32 and cast to the compute dtype, so the
    layer works under `mixed_float16`/`mixed_bfloat16`.

    Args:
        num_virtual_tokens: int >= 1, the number of virtual tokens.
        embedding_dim: int >= 1, the width of the token embeddings.
        encoder: `"mlp"`, `"lstm"`, `"lstm_mlp"` or `"none"`. Defaults to `"mlp"`.
        encoder_hidden_dim: width of the encoder's hidden layers; defaults to
            `embedding_dim`. Must be even for `"lstm"` and `"lstm_mlp"` (two
            directions of half the width each; PEFT's `encoder_hidden_size` is
            that half).
        dropout: dropout rate on the encoder's hidden activations (on the prompt
            itself for `"none"`), in [0, 1). Defaults to `0.0`.
        initializer: initializer of the virtual-token table (default: BERT's
            truncated normal, stddev 0.02).
        placeholder_ids: None (prefix mode) or a list of `num_virtual_tokens`
            distinct token ids (template mode). Defaults to `None`.
        max_sequence_length: optional longest sequence the layer may output
            (e.g. the backbone's position table, `backbone.max_sequence_length`);
            a longer sequence raises a `ValueError` when the length is static,
            and an `InvalidArgumentError` naming the limit at run time. Defaults to `None`.
        seed: seed of the dropout. Defaults to `None`.

    Call arguments:
        inputs: token embeddings (batch, seq, embedding_dim).
        token_ids: (batch, seq) int tensor; required in template mode, ignored
            in prefix mode.
        padding_mask: optional (batch, seq) mask, extended in prefix mode; it
            wins over a Keras mask arriving with `inputs` (see
            `keras_space.utils.masking`).
        training: Python bool, turns dropout on.

    Example:

    ```python
    import keras
    from keras_space.layers import PromptEncoder

    ids = keras.Input((None,), dtype="int32")
    emb = keras.layers.Embedding(1000, 64, mask_zero=True)(ids)
    x = PromptEncoder(8, 64, encoder="lstm")(emb)  # (batch, 8 + seq, 64), mask extended
    pooled = keras.layers.GlobalAveragePooling1D()(x)  # the mask excludes padding
    model = keras.Model(ids, keras.layers.Dense(2)(pooled))
    ```

    References:
        - Liu et al., "GPT Understands, Too", https://arxiv.org/abs/2103.10385
        - Su, "P-tuning: automatically building templates",
          https://kexue.fm/archives/8295
    """

    def __init__(
        self,
        num_virtual_tokens,
        embedding_dim,
        encoder="mlp",
        encoder_hidden_dim=None,
        dropout=0.0,
        initializer=None,
        placeholder_ids=None,
        max_sequence_length=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_virtual_tokens = validation.positive_int("num_virtual_tokens", num_virtual_tokens)
        self.embedding_dim = validation.positive_int("embedding_dim", embedding_dim)
        self.encoder = validation.choice("encoder", encoder, ENCODERS)
        self.encoder_hidden_dim = validation.positive_int(
            "encoder_hidden_dim", encoder_hidden_dim, allow_none=True
        )
        hidden = self.embedding_dim if encoder_hidden_dim is None else self.encoder_hidden_dim
        if encoder in ("lstm", "lstm_mlp") and hidden % 2:
            raise ValueError(
                f"`encoder_hidden_dim` must be even for encoder={encoder!r} (half per direction). "
                f"Received: encoder_hidden_dim={hidden}"
            )
        self.dropout = validation.probability("dropout", dropout)
        placeholder_ids = validation.int_sequence(
            "placeholder_ids", placeholder_ids, allow_none=True, minimum=0
        )
        if placeholder_ids is not None:
            if len(placeholder_ids) > num_virtual_tokens:
                raise ValueError(
                    f"More placeholders than virtual tokens: {len(placeholder_ids)} "
                    f"placeholder_ids for num_virtual_tokens={num_virtual_tokens}. "
                    f"Received: placeholder_ids={placeholder_ids}"
                )
            if len(placeholder_ids) < num_virtual_tokens:
                raise ValueError(
                    f"`placeholder_ids` must name one token id per virtual token "
                    f"({num_virtual_tokens}); {len(placeholder_ids)} would leave virtual "
                    f"tokens unused. Received: placeholder_ids={placeholder_ids}"
                )
            if len(set(placeholder_ids)) != len(placeholder_ids):
                raise ValueError(
                    f"`placeholder_ids` must be distinct. Received: placeholder_ids={placeholder_ids}"
                )
        self.initializer = keras.initializers.get(
            initializer
            if initializer is not None
            else keras.initializers.TruncatedNormal(stddev=0.02)
        )
        self.placeholder_ids = placeholder_ids
        self.max_sequence_length = validation.positive_int(
            "max_sequence_length", max_sequence_length, allow_none=True
        )
        self.seed = validation.non_negative_int("seed", seed, allow_none=True)
        self.supports_masking = True
        self._hidden = int(hidden)

    # ------------------------------------------------------------------ build
    def build(self, inputs_shape, token_ids_shape=None):
        if len(inputs_shape) != 3 or inputs_shape[-1] not in (None, self.embedding_dim):
            raise ValueError(
                "PromptEncoder expects token embeddings of shape (batch, sequence, "
                f"embedding_dim={self.embedding_dim}). Received: inputs shape {tuple(inputs_shape)}"
            )
        self.input_spec = keras.InputSpec(ndim=3, axes={-1: self.embedding_dim})
        self._check_length(inputs_shape[1])
        self.prompt_table = self.add_weight(
            name="prompt_table",
            shape=(self.num_virtual_tokens, self.embedding_dim),
            initializer=self.initializer,
            dtype="float32",
        )
        n, d, h = self.num_virtual_tokens, self.embedding_dim, self._hidden
        policy = self.dtype_policy
        self._dropout_layer = keras.layers.Dropout(self.dropout, seed=self.seed, dtype=policy)
        self._encoder_layers = []
        if self.encoder in ("lstm", "lstm_mlp"):
            names = ["lstm"] if self.encoder == "lstm" else ["lstm_0", "lstm_1"]
            width = d
            for name in names:
                lstm = keras.layers.Bidirectional(
                    keras.layers.LSTM(h // 2, return_sequences=True, dtype=policy, name=name),
                    dtype=policy,
                    name=name,
                )
                lstm.build((1, n, width))
                self._encoder_layers.append(lstm)
                width = h
            widths = [h]
        elif self.encoder == "mlp":
            widths = [h, h]
        else:
            widths = []
        last = d if self.encoder == "mlp" else h
        for i, width in enumerate(widths):
            dense = keras.layers.Dense(width, activation="relu", dtype=policy, name=f"dense_{i}")
            dense.build((n, last))
            self._encoder_layers.append(dense)
            last = width
        if self.encoder != "none":
            # residual encoders start at zero (the prompt is the table); the paper's does not
            out = keras.layers.Dense(
                d, kernel_initializer="zeros" if self.encoder in _RESIDUAL else "glorot_uniform",
                dtype=policy, name="dense_out"
            )
            out.build((n, last))
            self._encoder_layers.append(out)
        self.built = True

    def _check_length(self, seq):
        if self.max_sequence_length is None or seq is None:
            return
        extra = 0 if self.placeholder_ids is not None else self.num_virtual_tokens
        if isinstance(seq, (int, np.integer)):
            if seq + extra > self.max_sequence_length:
                raise ValueError(
                    f"Sequence too long: {seq} tokens + {extra} virtual tokens > "
                    f"max_sequence_length={self.max_sequence_length} (the backbone's "
                    "position table). Shorten the inputs or use fewer virtual tokens."
                )
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.debugging.assert_less_equal(
                seq + extra,
                self.max_sequence_length,
                message=(
                    f"Sequence too long: inputs + {extra} virtual tokens exceed "
                    f"max_sequence_length={self.max_sequence_length}"
                ),
            )

    # --------------------------------------------------------------- prompts
    def prompt_embeddings(self, training=None):
        """The (num_virtual_tokens, embedding_dim) prompt after the encoder, in float32."""
        table = ops.convert_to_tensor(self.prompt_table)
        if self.encoder == "none":
            return ops.cast(self._dropout_layer(table, training=training), "float32")
        h = ops.expand_dims(table, 0)
        for layer in self._encoder_layers:
            h = layer(h)
            if layer is not self._encoder_layers[-1]:
                h = self._dropout_layer(h, training=training)
        h = ops.cast(h[0], "float32")
        return table + h if self.encoder in _RESIDUAL else h

    def initialize_from_tokens(self, embeddings, token_ids):
        """Set the table to the embeddings of anchor tokens.

        Args:
            embeddings: a Keras `Embedding` layer (e.g. `backbone.token_embedding`)
                or a (vocabulary, embedding_dim) array.
            token_ids: `num_virtual_tokens` token ids, one per virtual token.
        """
        matrix = embeddings.embeddings if hasattr(embeddings, "embeddings") else embeddings
        matrix = np.asarray(ops.convert_to_numpy(matrix), dtype="float32")
        token_ids = np.asarray(token_ids, dtype="int64").reshape(-1)
        if token_ids.shape[0] != self.num_virtual_tokens:
            raise ValueError(
                f"`token_ids` must hold num_virtual_tokens={self.num_virtual_tokens} ids. "
                f"Received: token_ids={token_ids.tolist()}"
            )
        if matrix.ndim != 2 or matrix.shape[1] != self.embedding_dim:
            raise ValueError(
                f"`embeddings` must be (vocabulary, {self.embedding_dim}). "
                f"Received: shape {matrix.shape}"
            )
        if token_ids.min() < 0 or token_ids.max() >= matrix.shape[0]:
            raise ValueError(
                f"`token_ids` must lie in [0, {matrix.shape[0]}). Received: token_ids={token_ids.tolist()}"
            )
        if not self.built:
            self.build((None, None, self.embedding_dim))
        self.prompt_table.assign(matrix[token_ids])

    def freeze(self):
        """The inference form: an `encoder="none"` PromptEncoder holding the computed prompt.

        Its outputs equal this layer's inference outputs bit for bit; it has no
        encoder weights and no trainable weights.
        """
        if not self.built:
            raise ValueError("The layer must be built (called once) before `freeze()`.")
        config = self.get_config()
        config.update(encoder="none", encoder_hidden_dim=None, dropout=0.0)
        frozen = self.__class__.from_config(config)
        frozen.build((None, None, self.embedding_dim))
        frozen.prompt_table.assign(ops.convert_to_numpy(self.prompt_embeddings(training=False)))
        frozen.trainable = False
        return frozen

    # ------------------------------------------------------------------ call
    def extend_padding_mask(self, padding_mask):
        """Prefix mode: (batch, seq) mask -> (batch, num_virtual_tokens + seq), prompt real."""
        dtype = padding_mask.dtype
        mask = ops.cast(padding_mask, "int32")
        ones = ops.ones_like(mask[:, :1]) * ops.ones((1, self.num_virtual_tokens), "int32")
        return ops.cast(ops.concatenate([ones, mask], axis=1), dtype)

    def call(self, inputs, token_ids=None, padding_mask=None, training=None):
        prompt = ops.cast(self.prompt_embeddings(training=training), self.compute_dtype)
        inputs = ops.cast(inputs, self.compute_dtype)
        self._check_length(ops.shape(inputs)[1])
        if self.placeholder_ids is None:
            batch = ops.shape(inputs)[0]
            prefix = ops.broadcast_to(
                prompt[None], (batch, self.num_virtual_tokens, self.embedding_dim)
            )
            outputs = ops.concatenate([prefix, inputs], axis=1)
            if padding_mask is not None:  # the explicit argument wins over the Keras mask
                set_keras_mask(outputs, ops.cast(self.extend_padding_mask(padding_mask), "bool"))
            return outputs
        if token_ids is None:
            raise ValueError(
                "Template mode (placeholder_ids given) needs `token_ids`: "
                "call `layer(embeddings, token_ids)`."
            )
        if not keras.backend.standardize_dtype(token_ids.dtype).startswith(("int", "uint")):
            raise ValueError(
                "`token_ids` must be integer token ids. "
                f"Received: token_ids of dtype {keras.backend.standardize_dtype(token_ids.dtype)}"
            )
        if len(token_ids.shape) != 2 or any(
            a is not None and b is not None and a != b
            for a, b in zip(token_ids.shape, inputs.shape[:2], strict=False)
        ):
            raise ValueError(
                "`token_ids` must be (batch, sequence) like the embeddings "
                f"{tuple(inputs.shape)}. Received: token_ids of shape {tuple(token_ids.shape)}"
            )
        ids = ops.convert_to_tensor(self.placeholder_ids, dtype="int32")
        hits = ops.equal(ops.cast(token_ids, "int32")[..., None], ids)  # (b, s, n)
        is_placeholder = ops.any(hits, axis=-1, keepdims=True)
        hits = validation.holds(  # a row without placeholders would run without the prompt
            "token_ids", hits, ops.any(is_placeholder[..., 0], axis=1),
            f"at least one placeholder id {self.placeholder_ids} in every row (lay the texts "
            "into the template with apply_prompt_template)",
        )
        which = ops.argmax(ops.cast(hits, "int32"), axis=-1)
        return ops.where(is_placeholder, ops.take(prompt, which, axis=0), inputs)

    def compute_mask(self, inputs, mask=None):
        if self.placeholder_ids is not None or mask is None:
            return mask
        return ops.cast(self.extend_padding_mask(mask), "bool")

    def compute_output_shape(self, inputs_shape, token_ids_shape=None, padding_mask_shape=None):
        self._check_length(inputs_shape[1])
        if self.placeholder_ids is not None:
            return tuple(inputs_shape)
        seq = inputs_shape[1]
        seq = None if seq is None else seq + self.num_virtual_tokens
        return (inputs_shape[0], seq, inputs_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_virtual_tokens=self.num_virtual_tokens,
            embedding_dim=self.embedding_dim,
            encoder=self.encoder,
            encoder_hidden_dim=self.encoder_hidden_dim,
            dropout=self.dropout,
            initializer=keras.initializers.serialize(self.initializer),
            placeholder_ids=self.placeholder_ids,
            max_sequence_length=self.max_sequence_length,
            seed=self.seed,
        )
        return config
