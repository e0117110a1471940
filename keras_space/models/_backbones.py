"""The one module that knows what a keras-hub backbone looks like inside.

Private. `p_tuning_model`, `sentence_encoder` and `growth.widen` never touch a
backbone's attributes themselves: they ask the questions below. Supporting
another keras-hub backbone (RoBERTa, DistilBERT, GPT-2, ...) is an edit of
this module only: teach each question about the new family.

Supported today: keras-hub's `BertBackbone` and any backbone with the same
parts (`token_embedding`, `position_embedding`, optional `segment_embedding`,
`embeddings_add`, `embeddings_layer_norm`, `embeddings_dropout`,
`transformer_layers`, and for widening `pooled_dense`).

Questions:

- `check_embedding_stack(backbone)`: refuse, with the supported list, a
  backbone whose embedding stack this module cannot split.
- `hidden_dim`, `vocabulary_size`, `max_sequence_length`, `token_embedding`:
  sizes and the token table.
- `embed_tokens(backbone, token_ids)`: the token embeddings alone (where
  P-tuning splices its prompt).
- `finish_embeddings(backbone, token_embeddings, segment_ids)`: the rest of
  the embedding stack (positions, segments, LayerNorm, dropout).
- `run_transformer(backbone, x, padding_mask)`: the Transformer layers.
- `transformer_layers(backbone)`: those layers, in order.
- `sequence_output(backbone)`, `padding_mask_input(backbone)`: the
  functional backbone's last hidden states and padding-mask input.
- `embedding_parts`, `embeddings_norm`, `pooler`, `rebuilt_wider`: the
  pieces `widen` rescales and the wider twin it fills.
"""

import keras

SUPPORTED_BACKBONES = ("keras_hub.models.BertBackbone",)

_EMBEDDING_STACK = (
    "token_embedding",
    "position_embedding",
    "embeddings_add",
    "embeddings_layer_norm",
    "embeddings_dropout",
    "transformer_layers",
)


def has_embedding_stack(backbone):
    """Whether `backbone` has a BERT-style embedding stack this module can split."""
    return all(hasattr(backbone, name) for name in _EMBEDDING_STACK)


def check_embedding_stack(backbone):
    """Raise a `ValueError` listing the supported backbones unless `backbone` is one."""
    if not has_embedding_stack(backbone):
        missing = [name for name in _EMBEDDING_STACK if not hasattr(backbone, name)]
        raise ValueError(
            "`backbone` must be a keras-hub backbone with a BERT-style embedding stack "
            f"(supported: {', '.join(SUPPORTED_BACKBONES)}); missing {missing}. "
            f"Received: backbone={type(backbone).__name__}"
        )


def token_embedding(backbone):
    """The token-embedding layer (its `embeddings` is the vocabulary table)."""
    return backbone.token_embedding


def vocabulary_size(backbone):
    """Number of rows of the token-embedding table."""
    return backbone.token_embedding.input_dim


def hidden_dim(backbone):
    """Width of the hidden states."""
    return backbone.token_embedding.output_dim


def max_sequence_length(backbone):
    """Length of the position table (None when the backbone has none)."""
    return getattr(backbone, "max_sequence_length", None) or getattr(
        backbone.position_embedding, "sequence_length", None
    )


def embed_tokens(backbone, token_ids):
    """(batch, seq) token ids -> (batch, seq, hidden) token embeddings."""
    return backbone.token_embedding(token_ids)


def finish_embeddings(backbone, token_embeddings, segment_ids):
    """Token embeddings -> the first Transformer layer's input.

    Adds the position embeddings (positions count from the first given
    token) and, when the backbone has them, the segment embeddings; then
    LayerNorm and dropout.
    """
    parts = [token_embeddings, backbone.position_embedding(token_embeddings)]
    if getattr(backbone, "segment_embedding", None) is not None:
        parts.append(backbone.segment_embedding(segment_ids))
    x = backbone.embeddings_add(parts)
    x = backbone.embeddings_layer_norm(x)
    return backbone.embeddings_dropout(x)


def run_transformer(backbone, x, padding_mask):
    """Run every Transformer layer on hidden states `x` with `padding_mask`."""
    for layer in backbone.transformer_layers:
        x = layer(x, padding_mask=padding_mask)
    return x


def transformer_layers(backbone):
    """The Transformer layers in order.

    Uses the backbone's `transformer_layers` when it has them, else the
    layers named `transformer_layer_<i>` (keras-hub's naming convention).
    """
    layers = getattr(backbone, "transformer_layers", None)
    if layers:
        return list(layers)
    named = [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]
    if not named:
        raise ValueError(
            "`backbone` has no Transformer layers (no `transformer_layers` and no layers "
            f"named 'transformer_layer_<i>'; supported: {', '.join(SUPPORTED_BACKBONES)}). "
            f"Received: backbone={backbone.name!r}"
        )
    return sorted(named, key=lambda layer: int(layer.name.rsplit("_", 1)[1]))


def padding_mask_input(backbone):
    """The functional backbone's `padding_mask` input (refuses backbones without one)."""
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            "`backbone` must be a keras-hub backbone (a keras.Model taking token_ids and "
            f"padding_mask; supported: {', '.join(SUPPORTED_BACKBONES)}). "
            f"Received: backbone={type(backbone).__name__}"
        )
    inputs = backbone.input
    if not isinstance(inputs, dict) or "padding_mask" not in inputs:
        raise ValueError(
            "`backbone` must take a dict of inputs with a 'padding_mask' (a keras-hub "
            f"encoder backbone). Received inputs: {inputs}"
        )
    return inputs["padding_mask"]


def sequence_output(backbone):
    """The functional backbone's last hidden states (batch, seq, hidden)."""
    output = backbone.output
    return output["sequence_output"] if isinstance(output, dict) else output


def is_bert_backbone(model):
    """Whether `model` is a BertBackbone-shaped keras-hub backbone (with a pooler)."""
    return type(model).__name__ == "BertBackbone" or (
        has_embedding_stack(model) and hasattr(model, "pooled_dense")
    )


def transformer_sublayers(layer):
    """The parts of a keras-hub `TransformerEncoder` layer, by role.

    keras-hub exposes no public accessors for them, so this is the one place
    that reads its private attributes (attention: a `MultiHeadAttention`).
    """
    return {
        "attention": layer._self_attention_layer,
        "attention_norm": layer._self_attention_layer_norm,
        "intermediate": layer._feedforward_intermediate_dense,
        "output": layer._feedforward_output_dense,
        "output_norm": layer._feedforward_layer_norm,
    }


def embedding_parts(backbone):
    """The embedding tables: token, position and (when present) segment."""
    names = ("token_embedding", "position_embedding", "segment_embedding")
    return [getattr(backbone, n) for n in names if getattr(backbone, n, None) is not None]


def embeddings_norm(backbone):
    """The LayerNorm after the embedding sum."""
    return backbone.embeddings_layer_norm


def pooler(backbone):
    """The tanh Dense on the first token ("pooled_output")."""
    return backbone.pooled_dense


def rebuilt_wider(backbone, factor):
    """A new backbone of the same class, `hidden_dim` and `intermediate_dim` x `factor`."""
    config = backbone.get_config()
    config.update(
        hidden_dim=backbone.hidden_dim * factor,
        intermediate_dim=backbone.intermediate_dim * factor,
    )
    return type(backbone).from_config(config)


def masked_lm_head(backbone):
    """A keras-hub `MaskedLMHead` tied to the backbone's token embedding."""
    import keras_hub

    return keras_hub.layers.MaskedLMHead(
        token_embedding=backbone.token_embedding,
        intermediate_activation="gelu",
        layer_norm_epsilon=1e-12,
        dtype=backbone.dtype_policy,
        name="masked_lm_head",
    )

