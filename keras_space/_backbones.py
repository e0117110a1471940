"""The one module that knows what a keras-hub backbone looks like inside.

Private to keras_space, imported by every module that looks inside a backbone:
`p_tuning_model`, `sentence_encoder`, `layerwise_decay`, `bert_from_checkpoint` and
`growth.widen` never touch a backbone's attributes themselves: they ask the questions
below. Supporting another keras-hub backbone is an edit of this module only: teach each
question about the new family (tests/backbones_test.py checks the hand-written forward
below against keras-hub's own for every family).

Families (`family(backbone)`, by `isinstance` on keras-hub's classes, so a subclass
counts as its parent, e.g. `XLMRobertaBackbone` as RoBERTa):

- `"bert"`: `BertBackbone`, `ElectraBackbone`, `AlbertBackbone`: `token_embedding`,
  `position_embedding`, optional `segment_embedding`, `embeddings_add`,
  `embeddings_layer_norm`, `embeddings_dropout`, `transformer_layers`; ELECTRA and
  ALBERT add an `embeddings_projection` from the embedding width to the hidden width,
  and ALBERT's `transformer_layers` are groups of shared layers, each group called
  `num_layers // num_groups` times.
- `"roberta"`: `RobertaBackbone`, `DistilBertBackbone`: one
  `TokenAndPositionEmbedding` layer (`embeddings`), LayerNorm, dropout,
  encoder layers; no segment ids.
- `"gpt2"`: `GPT2Backbone`: token + position embeddings, dropout, causal
  `TransformerDecoder` layers (`decoder_padding_mask=`), a final LayerNorm,
  the token table tied as the language-model head; no segment ids.

Questions:

- `check_embedding_stack(backbone)`: refuse, with the supported list, a
  backbone whose embedding stack this module cannot split.
- `is_causal`, `has_segment_ids`, `embedding_dim` (width of the token table,
  where prompts live), `hidden_dim`, `vocabulary_size`,
  `max_sequence_length`, `token_embedding`.
- `embed_tokens(backbone, token_ids)`: the token embeddings alone (where
  P-tuning splices its prompt).
- `finish_embeddings(backbone, token_embeddings, segment_ids, positions)`:
  the rest of the embedding stack (positions, segments, LayerNorm, dropout,
  projection).
- `run_transformer(backbone, x, padding_mask, before_layer=None)`: the
  Transformer layers in call order and any final norm: the backbone's sequence
  output (`before_layer` rewrites each layer call's input: deep prompts);
  `num_layer_calls`, and `layer_inputs(backbone, token_ids)`: each call's input
  on a token sequence alone (deep prompts' anchors).
- `masked_lm_head(backbone)`, `causal_lm_logits(backbone, hidden)`: the
  language-model heads that verbalizers score label words with.
- `empty_cache`, `run_decoder_with_cache` (GPT-2): cached decoding, for generation.
- `transformer_layers(backbone)`: the distinct Transformer layers, in order.
- `sequence_output(backbone)`, `padding_mask_input(backbone)`: the
  functional backbone's last hidden states and padding-mask input.
- `embedding_parts`, `embeddings_norm`, `pooler`, `rebuilt_wider`,
  `is_bert_backbone`: the pieces `widen` and `bert_from_checkpoint` use
  (BERT only).
"""

import keras
import numpy as np


def _families():
    """The families, each with its keras-hub classes."""
    import keras_hub

    m = keras_hub.models
    return (((m.BertBackbone, m.ElectraBackbone, m.AlbertBackbone), "bert"),
            ((m.RobertaBackbone, m.DistilBertBackbone), "roberta"),
            ((m.GPT2Backbone,), "gpt2"))


def _supported():
    """The supported classes' names, for error messages."""
    return ", ".join(f"keras_hub.models.{cls.__name__}"
                     for classes, _ in _families() for cls in classes)


def family(backbone):
    """`"bert"`, `"roberta"`, `"gpt2"` or None (not a backbone this module can split)."""
    for classes, name in _families():
        if isinstance(backbone, classes):
            return name
    return None


def check_embedding_stack(backbone):
    """Raise a `ValueError` listing the supported backbones unless `backbone` is one."""
    if family(backbone) is None:
        raise ValueError(
            "`backbone` must be a keras-hub backbone whose embedding stack keras_space can "
            f"split (supported: {_supported()}, or subclasses). "
            f"Received: backbone={type(backbone).__name__}"
        )


def is_causal(backbone):
    """Whether each position sees only itself and the positions before it (GPT-2)."""
    return family(backbone) == "gpt2"


def has_segment_ids(backbone):
    """Whether the backbone takes a `segment_ids` input."""
    inputs = getattr(backbone, "input", None)
    if isinstance(inputs, dict):
        return "segment_ids" in inputs
    return getattr(backbone, "segment_embedding", None) is not None


def token_embedding(backbone):
    """The token-embedding layer (its `embeddings` is the vocabulary table)."""
    return backbone.token_embedding


def vocabulary_size(backbone):
    """Number of rows of the token-embedding table."""
    return backbone.token_embedding.input_dim


def embedding_dim(backbone):
    """Width of the token embeddings (where prompts are spliced in)."""
    return backbone.token_embedding.output_dim


def hidden_dim(backbone):
    """Width of the hidden states (differs from `embedding_dim` for ALBERT, small ELECTRAs)."""
    return getattr(backbone, "hidden_dim", None) or embedding_dim(backbone)


def _position_embedding(backbone):
    if family(backbone) == "roberta":
        return backbone.embeddings.position_embedding
    return backbone.position_embedding


def max_sequence_length(backbone):
    """Length of the position table (None when the backbone has none)."""
    return getattr(backbone, "max_sequence_length", None) or getattr(
        _position_embedding(backbone), "sequence_length", None
    )


def embed_tokens(backbone, token_ids):
    """(batch, seq) token ids -> (batch, seq, embedding_dim) token embeddings."""
    return backbone.token_embedding(token_ids)


def finish_embeddings(backbone, token_embeddings, segment_ids=None, positions=None):
    """Token embeddings -> the first Transformer layer's input.

    Adds the position embeddings (of `positions`, (batch, seq) ints, when
    given; else 0, 1, ... from the first given token) and, when the backbone
    has them, the segment embeddings; then the family's LayerNorm, dropout
    and projection to the hidden width.
    """
    kind = family(backbone)
    positions = _position_embedding(backbone)(token_embeddings, positions=positions)
    if kind == "roberta":
        x = keras.ops.add(token_embeddings, positions)
    else:
        parts = [token_embeddings, positions]
        if getattr(backbone, "segment_embedding", None) is not None:
            parts.append(backbone.segment_embedding(segment_ids))
        x = backbone.embeddings_add(parts)
    if kind != "gpt2":
        x = backbone.embeddings_layer_norm(x)
    x = backbone.embeddings_dropout(x)
    projection = getattr(backbone, "embeddings_projection", None)
    return x if projection is None else projection(x)


def _call_order(backbone):
    """The Transformer layers in the order the backbone calls them (ALBERT repeats groups)."""
    layers = list(backbone.transformer_layers)
    if layers and isinstance(layers[0], (list, tuple)):  # ALBERT: groups of shared layers
        repeats = backbone.num_layers // len(layers)
        return [layer for group in layers for _ in range(repeats) for layer in group]
    return layers


def num_layer_calls(backbone):
    """How many Transformer layer calls a forward pass makes (ALBERT: more than its layers)."""
    return len(_call_order(backbone))


def run_transformer(backbone, x, padding_mask, before_layer=None):
    """The backbone's sequence output from its first Transformer layer's input `x`.

    `before_layer(i, x)`, when given, returns the states that layer call `i` (0, 1, ...
    `num_layer_calls - 1`) reads instead of `x` (deep prompts write theirs in there).
    """
    causal = is_causal(backbone)
    for i, layer in enumerate(_call_order(backbone)):
        if before_layer is not None:
            x = before_layer(i, x)
        if causal:
            x = layer(x, decoder_padding_mask=padding_mask)
        else:
            x = layer(x, padding_mask=padding_mask)
    return backbone.layer_norm(x) if causal else x


def layer_inputs(backbone, token_ids):
    """What each Transformer layer call reads when the backbone runs on `token_ids` alone
    (a list of int ids, all real, from position 0; segment 0; inference): a list of
    (len(token_ids), hidden_dim) numpy arrays, one per call."""
    ids = keras.ops.convert_to_tensor(np.asarray(token_ids, "int32")[None])
    segments = keras.ops.zeros_like(ids) if has_segment_ids(backbone) else None
    x = finish_embeddings(backbone, embed_tokens(backbone, ids), segments)
    seen = []

    def record(i, states):
        seen.append(np.asarray(keras.ops.convert_to_numpy(states))[0])
        return states

    run_transformer(backbone, x, keras.ops.ones_like(ids), before_layer=record)
    return seen


def empty_cache(backbone, batch_size, length, dtype):
    """GPT-2: a zero key/value cache (batch, layers, 2, length, heads, head width)."""
    heads = backbone.num_heads
    shape = (batch_size, backbone.num_layers, 2, length, heads, backbone.hidden_dim // heads)
    return keras.ops.zeros(shape, dtype=dtype)


def run_decoder_with_cache(backbone, x, cache, index, before_layer=None):
    """GPT-2: the decoder layers on the states `x` of positions `index`, `index + 1`, ...,
    attending to the cache (their own keys and values written into it at `index`).
    Returns (the final-normed states, the new cache); `before_layer` as in
    `run_transformer`."""
    caches = []
    for i, layer in enumerate(backbone.transformer_layers):
        if before_layer is not None:
            x = before_layer(i, x)
        x, layer_cache = layer(x, self_attention_cache=cache[:, i, ...],
                               self_attention_cache_update_index=index)
        caches.append(layer_cache)
    return backbone.layer_norm(x), keras.ops.stack(caches, axis=1)


def causal_lm_logits(backbone, hidden):
    """(..., hidden) states -> next-token logits through the tied token table (GPT-2's head)."""
    return backbone.token_embedding(hidden, reverse=True)


def transformer_layers(backbone):
    """The Transformer layers in order.

    Uses the backbone's `transformer_layers` when it has them, else the
    layers named `transformer_layer_<i>` (keras-hub's naming convention).
    """
    layers = getattr(backbone, "transformer_layers", None)
    if layers:
        if isinstance(layers[0], (list, tuple)):  # ALBERT: groups of shared layers
            return [layer for group in layers for layer in group]
        return list(layers)
    named = [layer for layer in backbone.layers if layer.name.startswith("transformer_layer_")]
    if not named:
        raise ValueError(
            "`backbone` has no Transformer layers (no `transformer_layers` and no layers "
            f"named 'transformer_layer_<i>'; supported: {_supported()}). "
            f"Received: backbone={backbone.name!r}"
        )
    return sorted(named, key=lambda layer: int(layer.name.rsplit("_", 1)[1]))


def padding_mask_input(backbone):
    """The functional backbone's `padding_mask` input (refuses backbones without one)."""
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            "`backbone` must be a keras-hub backbone (a keras.Model taking token_ids and "
            f"padding_mask; supported: {_supported()}). "
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
    """Whether `model` is a keras-hub `BertBackbone` (or a subclass).

    ELECTRA and ALBERT share BERT's attribute names but are not its subclasses (they
    add an embedding projection, and ALBERT shares layers), so they are not BERT here.
    """
    import keras_hub

    return isinstance(model, keras_hub.models.BertBackbone)


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
    """A new keras-hub `MaskedLMHead` tied to the backbone's token embedding.

    Shaped like the family's pretrained head (keras-hub's `*MaskedLM` tasks):
    GELU, with BERT's LayerNorm epsilon 1e-12 for BERT and ELECTRA, the tanh
    GELU for ALBERT, keras-hub's defaults for RoBERTa and DistilBERT.
    """
    import keras_hub

    options = {"intermediate_activation": "gelu"}
    if isinstance(backbone, keras_hub.models.AlbertBackbone):
        from keras_hub.src.utils.keras_utils import gelu_approximate

        options["intermediate_activation"] = gelu_approximate
    elif family(backbone) == "bert":
        options["layer_norm_epsilon"] = 1e-12
    return keras_hub.layers.MaskedLMHead(
        token_embedding=backbone.token_embedding,
        dtype=backbone.dtype_policy,
        name="masked_lm_head",
        **options,
    )

