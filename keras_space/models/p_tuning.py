"""P-tuning a pretrained Transformer backbone: frozen backbone, trainable prompt and head."""

import keras
import numpy as np
from keras import ops

from keras_space import _backbones
from keras_space.api_export import keras_space_export
from keras_space.layers.masked_mean_pooling import MaskedMeanPooling
from keras_space.layers.prompt_encoder import PromptEncoder
from keras_space.models import _lora as lora
from keras_space.utils import validation
from keras_space.utils.masking import resolve_padding_mask

HEADS = ("classification", "similarity", "masked_lm", "causal_lm")
POOLINGS = ("mean", "cls", "last")
DEPTHS = ("shallow", "deep")


@keras.saving.register_keras_serializable(package="keras_space")
class _MaskPosition(keras.layers.Layer):
    """(batch, 1) position of the first `mask_token_id` in each row, plus `offset`.

    Refuses a row without the mask token (it would silently score some
    position), and a row where `offset` (-1 on a causal backbone: the state
    before the slot predicts it) would land before the first position.
    """

    def __init__(self, mask_token_id, offset=0, **kwargs):
        super().__init__(**kwargs)
        self.mask_token_id = validation.non_negative_int("mask_token_id", mask_token_id)
        self.offset = validation.positive_int("offset", offset, minimum=-1)

    def call(self, token_ids):
        is_mask = ops.equal(token_ids, self.mask_token_id)
        is_mask = validation.holds(
            "token_ids", is_mask, ops.any(is_mask, axis=1),
            f"the mask token {self.mask_token_id} in every row (the language-model head "
            "scores the label words there)",
        )
        position = ops.argmax(ops.cast(is_mask, "int32"), axis=1)[:, None] + self.offset
        if self.offset < 0:
            position = validation.holds(
                "token_ids", position, ops.all(position >= 0, axis=1),
                f"something before the mask token {self.mask_token_id} in every row (a causal "
                "model predicts a slot from the state before it)",
            )
        return ops.cast(position, "int32")

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor((token_ids.shape[0], 1), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "mask_token_id": self.mask_token_id, "offset": self.offset}


@keras.saving.register_keras_serializable(package="keras_space")
class _LastRealPosition(keras.layers.Layer):
    """(batch, seq) padding mask -> (batch, 1) index of each row's last real token, plus `offset`.

    Right or left padding alike. Refuses a row without a real token.
    """

    def __init__(self, offset=0, **kwargs):
        super().__init__(**kwargs)
        self.offset = validation.non_negative_int("offset", offset)

    def call(self, padding_mask):
        mask = _ones_and_zeros(padding_mask)
        mask = validation.holds(
            "padding_mask", mask, ops.any(mask > 0, axis=1),
            "at least one real token in every row (the last real token is scored)",
        )
        from_end = ops.argmax(ops.flip(mask, axis=1), axis=1)
        return ops.cast(ops.shape(mask)[1] - 1 - from_end + self.offset, "int32")[:, None]

    def compute_output_spec(self, padding_mask):
        return keras.KerasTensor((padding_mask.shape[0], 1), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="keras_space")
class _RealPositions(keras.layers.Layer):
    """(batch, seq) padding mask -> position ids that count real tokens only.

    The first real token gets position 0 wherever it is, so a left-padded row
    gets the positions (and the outputs) of the same row padded on the right,
    the layout the backbone was pretrained on; padded slots repeat the
    previous position (their outputs are never read).
    """

    def call(self, padding_mask):
        mask = _ones_and_zeros(padding_mask)
        return ops.maximum(ops.cumsum(mask, axis=1) - 1, 0)

    def compute_output_spec(self, padding_mask):
        return keras.KerasTensor(padding_mask.shape, dtype="int32")


@keras.saving.register_keras_serializable(package="keras_space")
class _CheckedTokenIds(keras.layers.Layer):
    """Token ids, refused outside [0, vocabulary) (`validation.all_token_ids`)."""

    def __init__(self, vocabulary, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary = validation.positive_int("vocabulary", vocabulary)

    def call(self, token_ids):
        return validation.all_token_ids("token_ids", token_ids, self.vocabulary)

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor(token_ids.shape, dtype=token_ids.dtype)

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary}


@keras.saving.register_keras_serializable(package="keras_space")
class _WithoutTokens(keras.layers.Layer):
    """(token ids, padding mask) -> the mask with the positions of `token_ids` (a list of
    ids: a template's placeholders) padded, so the backbone reads the row without them."""

    def __init__(self, token_ids, **kwargs):
        super().__init__(**kwargs)
        self.token_ids = validation.int_sequence("token_ids", token_ids, minimum=0)

    def call(self, ids, padding_mask):
        dropped = ops.any(ops.equal(ids[..., None], ops.convert_to_tensor(self.token_ids, ids.dtype)),
                          axis=-1)
        return ops.where(dropped, 0, _ones_and_zeros(padding_mask))

    def compute_output_spec(self, ids, padding_mask):
        return keras.KerasTensor(padding_mask.shape, dtype="int32")

    def get_config(self):
        return {**super().get_config(), "token_ids": self.token_ids}


def _ones_and_zeros(padding_mask):
    """A bool or 0/1 padding mask as int32 ones (real) and zeros (padding); a 2 is
    refused (the one mask rule, `resolve_padding_mask`)."""
    return ops.cast(resolve_padding_mask(None, padding_mask), "int32")


def _gather_positions(x, positions):
    """(batch, seq, dim) states at (batch, k) positions -> (batch, k, dim)."""
    return ops.take_along_axis(x, ops.cast(positions, "int32")[:, :, None], axis=1)


@keras_space_export("keras_space.models.PTuningModel")
class PTuningModel(keras.Model):
    """The functional model `p_tuning_model` returns.

    A plain functional model, except that it keeps its frozen layers frozen
    through `.keras` save/load: Keras restores `trainable=False` on a layer
    before the layer builds its sublayers (keras-hub's `TransformerEncoder`
    creates its attention and feed-forward layers in `build()`), and those
    sublayers then come back trainable, so a reloaded frozen backbone would
    train and the saved optimizer state would not fit. The constructor
    re-applies each frozen layer's `trainable=False`, which Keras's setter
    passes down to every sublayer (through `True` first: on the TensorFlow
    backend, assigning an attribute the value it already holds is skipped,
    setter included).

    With LoRA (`p_tuning_model(..., lora_rank=r)`), the LoRA factors are the only
    trainable weights of the backbone, and they are saved and loaded as they are
    (the frozen kernels too): see `keras_space.models._lora`.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        for layer in self.layers:
            if not layer.trainable:
                layer.trainable = True
                layer.trainable = False
        lora.attach(self)  # after the flags above: they freeze the factors too

    def get_config(self):
        config = super().get_config()
        lora_config = lora.config_of(self)
        if lora_config is not None:
            config["lora"] = lora_config
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        lora_config = config.pop("lora", None)
        model = super().from_config(config, custom_objects=custom_objects)
        lora.restore(model, lora_config)
        return model


@keras_space_export("keras_space.models.p_tuning_model")
def p_tuning_model(
    backbone,
    num_classes=None,
    num_virtual_tokens=16,
    encoder="mlp",
    encoder_hidden_dim=None,
    dropout=0.0,
    placeholder_ids=None,
    anchor_token_ids=None,
    head="classification",
    pooling="mean",
    label_token_ids=None,
    mask_token_id=None,
    masked_lm_head=None,
    sequence_length=None,
    train_backbone=False,
    seed=None,
    depth="shallow",
    lora_rank=None,
):
    """P-tune a keras-hub backbone: BERT family or GPT-2.

    Builds a functional model on the backbone's own layers with a
    `PromptEncoder` spliced in after the token embedding: as a prefix
    (`placeholder_ids=None`: the prompt is prepended, the padding mask and
    segment ids are extended) or in template mode (the embeddings of the
    `placeholder_ids` tokens, placed in the text by `apply_prompt_template`,
    are replaced). Positions count real tokens only, from the first real one
    (the first virtual token in prefix mode), so rows padded on the left give
    the same logits as rows padded on the right, and padded positions never
    change them. The backbone is frozen (`train_backbone=False`, P-tuning's
    few-shot setting), so the trainable weights are exactly the prompt
    encoder's and the head's; with `train_backbone=True` everything trains.

    Supported backbones (`keras_hub.models.*`): `BertBackbone`,
    `ElectraBackbone`, `AlbertBackbone` (embedding width below the hidden
    width: the prompt lives in the embedding space, before the projection),
    `RobertaBackbone`, `DistilBertBackbone` (no segment ids: the model takes
    `token_ids` and `padding_mask` only), `GPT2Backbone` (causal: a virtual
    token sees only what is before it, as the text does; the prefix sees no
    text), and subclasses of these.
    The model's inputs are the backbone's.

    Deep prompts (`depth="deep"`, Liu et al. 2022, "P-Tuning v2"): before every
    Transformer layer call after the first, the states at the prompt's positions
    are replaced by that layer's own trainable prompt (layers named
    `prompt_encoder_1`, `prompt_encoder_2`, ...), so the prompt steers every
    layer, not only what the first one reads. On GPT-2 with anchor tokens, the
    deep model starts out equal to the shallow one (a causal prefix's states
    depend on the prefix alone).

    Heads:
        - `"classification"`: Dense(num_classes) on the padding-aware mean of
          the text's states (`pooling="mean"`, the default; in prefix mode the
          virtual tokens' states are left out, as a sentence encoder's mean
          is over the text: on a frozen sentence encoder such as MiniLM this is
          what beats a linear probe), on the first
          text token (`"cls"`, encoders only) or on the last real token
          (`"last"`, the natural choice on GPT-2, which sees everything there).
        - `"similarity"` (sentence pairs; the recipe that beats the probes on SICK
          entailment): a sentence encoder's own head, cosine similarity, as the
          verbalizer. The model takes two input dicts, `[first, second]`, and
          reads two numbers, `[cos(a, b), cos(P a, b)]` (the layer named
          `"similarities"`), into Dense(num_classes): `a` the first sentence
          without the prompt (in template mode, its row with the placeholders
          left out), `P a` with it, `b` the second sentence, each pooled as
          `pooling` says (all three in the model's mode: in `fit`, with the
          backbone's dropout). With one virtual token anchored at "not"
          (`num_virtual_tokens=1, placeholder_ids=[slot],
          anchor_token_ids=[not_id]`, rows `[CLS] [P] a [SEP]`), the prompt starts
          as the hand-written "not", which moves a premise towards its
          contradictions; start the head at a linear probe's solution on the
          `"similarities"` (the P-tuning guide shows how).
        - `"masked_lm"` (encoders): PET/P-tuning style. The masked-LM head
          scores the `label_token_ids` (one label word per class) at the
          position of `mask_token_id`. Pass the backbone's pretrained head as
          `masked_lm_head` when it has one (e.g.
          `keras_hub.models.BertMaskedLM.from_preset(...).masked_lm_head`);
          otherwise a `keras_hub.layers.MaskedLMHead` tied to the (frozen)
          token embedding is created and trained.
        - `"causal_lm"` (GPT-2, "GPT understands, too"): the tied
          token-embedding head's next-token logits of the `label_token_ids`
          at the last real token, or, with `mask_token_id`, at the token just
          before that slot of the template (the state that predicts it).
          Nothing but the prompt trains.

    Args:
        backbone: a supported keras-hub backbone (above). Its `trainable` flag
            is set to `train_backbone`.
        num_classes: number of classes (classification head). Defaults to `None`.
        num_virtual_tokens: passed to `PromptEncoder`. Defaults to `16`.
        encoder: passed to `PromptEncoder`. Defaults to `"mlp"`.
        encoder_hidden_dim: passed to `PromptEncoder`. Defaults to `None`.
        dropout: passed to `PromptEncoder`. Defaults to `0.0`.
        placeholder_ids: passed to `PromptEncoder`. Defaults to `None` (prefix mode).
        anchor_token_ids: optional token ids whose embeddings initialise the
            virtual tokens (e.g. the ids of a hand-written prompt). Defaults to `None`.
        head: `"classification"`, `"similarity"`, `"masked_lm"` or `"causal_lm"`.
            Defaults to `"classification"`.
        pooling: `"mean"`, `"cls"` or `"last"` (classification and similarity
            heads). Defaults to `"mean"`.
        label_token_ids: one token id per class (language-model heads). Defaults to `None`.
        mask_token_id: the `[MASK]` id (masked-LM head, required) or the id of
            a slot token in the template (causal-LM head, optional); the first
            occurrence in each row is scored. Defaults to `None`.
        masked_lm_head: optional pretrained masked-LM head layer. Defaults to `None`.
        sequence_length: optional static input length; checked against the
            backbone's position table when given (by the `PromptEncoder`).
            Defaults to `None`.
        train_backbone: bool, whether the backbone trains too. Defaults to `False`.
        seed: seed of the prompt encoder's dropout (deep prompts: `seed + i` for layer
            call `i`). Defaults to `None`.
        depth: `"shallow"` (P-tuning: the prompt enters with the token embeddings)
            or `"deep"` (P-tuning v2: also a prompt of its own at the input of
            every further Transformer layer call, in the hidden space, written over
            the prompt's positions: the virtual tokens' states in prefix mode, the
            placeholders' in template mode). Deep prompts use the same `encoder`
            choice per layer; `anchor_token_ids` initialise each layer's prompt
            from the anchor tokens' states at that layer (the backbone run on the
            anchors alone). Defaults to `"shallow"`.
        lora_rank: optional int > 0: also train a LoRA update of the backbone
            (keras-hub's `backbone.enable_lora(lora_rank)`: rank-`lora_rank` factors
            beside the query and value projections of every attention layer,
            `W + A B`, `B` starting at zero, so the model starts out as without
            LoRA). The factors train with the prompt and the head; everything else
            of the backbone stays frozen (the projections' biases too, as in HF
            PEFT's default). `.keras` files and `save_weights` keep the factors and
            the frozen kernels apart, so a reloaded model resumes; `merge_lora`
            gives the merged model for serving. Not with `train_backbone=True`.
            Defaults to `None` (no LoRA).

    Returns:
        A `PTuningModel` (a functional `keras.Model`) taking the backbone's
        input dict (`token_ids`, `padding_mask`, and `segment_ids` where the
        backbone has them; the similarity head: a list of two such dicts) and
        returning (batch, num_classes) logits. Its
        `PromptEncoder` is the layer named `"prompt_encoder"` (deep prompts add
        `"prompt_encoder_1"`, ... one per further layer call).

    Example:

    ```python fixture:minilm
    import keras, keras_hub
    import numpy as np
    from keras_space.models import p_tuning_model
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    preprocess = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=64
    )
    model = p_tuning_model(backbone, num_classes=2)   # 16 tokens, MLP, mean pooling
    model.compile(keras.optimizers.AdamW(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess(["great film", "dull plot"]), np.array([1, 0]), epochs=1, verbose=0)

    # GPT-2: label words scored by the language-model head at the last token
    # (a small random GPT-2 here; GPT2Backbone.from_preset("gpt2_base_en") and its
    # tokenizer's ids of " terrible" and " great" in practice)
    gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=100, num_layers=1, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=64)
    model = p_tuning_model(gpt2, head="causal_lm", label_token_ids=[10, 11])
    ```

    References:
        - Liu et al., "GPT Understands, Too", https://arxiv.org/abs/2103.10385
        - Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning
          Universally Across Scales and Tasks", https://arxiv.org/abs/2110.07602
    """
    _backbones.check_embedding_stack(backbone)
    validation.positive_int("sequence_length", sequence_length, allow_none=True)
    train_backbone = validation.strict_bool("train_backbone", train_backbone)
    _check_lora(backbone, lora_rank, train_backbone)
    label_token_ids = _check_head(backbone, head, pooling, num_classes, label_token_ids,
                                  mask_token_id, masked_lm_head)
    prompts = _prompt_encoders(
        backbone, depth, anchor_token_ids, num_virtual_tokens=num_virtual_tokens, encoder=encoder,
        encoder_hidden_dim=encoder_hidden_dim, dropout=dropout, placeholder_ids=placeholder_ids,
        seed=seed,
    )
    inputs = _backbone_inputs(backbone, sequence_length)
    token_ids = _CheckedTokenIds(_backbones.vocabulary_size(backbone))(inputs["token_ids"])
    x = _prompted_states(backbone, prompts, token_ids, inputs.get("segment_ids"),
                         inputs["padding_mask"], depth)
    extra = num_virtual_tokens if placeholder_ids is None else 0  # the text starts there
    if head == "classification":
        features = _pooled(backbone, x, inputs["padding_mask"], extra, pooling)
        logits = _classifier(backbone, features, num_classes)
    elif head == "similarity":
        second = _backbone_inputs(backbone, sequence_length, prefix="second_")
        logits = _similarity(backbone, x, token_ids, inputs, second, extra, pooling, num_classes,
                             placeholder_ids)
        inputs = [inputs, second]
    else:
        logits = _verbalizer(backbone, x, token_ids, inputs["padding_mask"], extra, head,
                             label_token_ids, mask_token_id, masked_lm_head)
    # last: a refused model leaves the backbone as it was
    if lora_rank is not None:
        backbone.enable_lora(lora_rank)  # keras-hub's own; PTuningModel keeps the factors trainable
    backbone.trainable = train_backbone
    return PTuningModel(inputs, logits, name="p_tuning_model")


def _check_lora(backbone, lora_rank, train_backbone):
    """Refuse a bad rank, LoRA with a backbone that trains whole, and LoRA enabled by hand."""
    validation.positive_int("lora_rank", lora_rank, allow_none=True)
    lora.check_no_lora(backbone, "pass lora_rank=r instead: p_tuning_model enables keras-hub's "
                       "LoRA itself, so that the factors survive save/load")
    if lora_rank is not None and train_backbone:
        raise ValueError(
            "`lora_rank` trains a low-rank update of a frozen backbone; with train_backbone=True "
            f"every backbone weight trains already. Received: lora_rank={lora_rank}, "
            "train_backbone=True")


def _check_head(backbone, head, pooling, num_classes, label_token_ids, mask_token_id, masked_lm_head):
    """Refuse a head that does not fit the backbone; returns the label words as a list."""
    validation.choice("head", head, HEADS)
    validation.choice("pooling", pooling, POOLINGS)
    causal = _backbones.is_causal(backbone)
    kind = type(backbone).__name__
    if head == "masked_lm" and causal:
        raise ValueError(
            f"`head='masked_lm'` needs a bidirectional encoder; {kind} is causal: use "
            "head='causal_lm' (its language-model head scores the label words at the last "
            "real token). Received: head='masked_lm'"
        )
    if head == "causal_lm" and not causal:
        raise ValueError(
            f"`head='causal_lm'` needs a causal backbone (GPT-2); {kind} is a bidirectional "
            "encoder: use head='masked_lm' with a mask_token_id. Received: head='causal_lm'"
        )
    if head in ("classification", "similarity"):
        validation.positive_int("num_classes", num_classes)
        if causal and pooling == "cls":
            raise ValueError(
                f"`pooling='cls'` reads the first token, which on the causal {kind} sees "
                "nothing after itself: use pooling='last' or 'mean'. Received: pooling='cls'"
            )
        return label_token_ids
    label_token_ids = validation.int_sequence("label_token_ids", label_token_ids, minimum=0)
    validation.non_negative_int("mask_token_id", mask_token_id, allow_none=causal)
    if masked_lm_head is not None and causal:
        raise ValueError(
            "`masked_lm_head` is for head='masked_lm'; the causal head is the backbone's "
            f"tied token embedding. Received: masked_lm_head={masked_lm_head!r}"
        )
    vocabulary = _backbones.vocabulary_size(backbone)
    ids = label_token_ids + ([] if mask_token_id is None else [mask_token_id])
    outside = [i for i in ids if i >= vocabulary]
    if outside:
        raise ValueError(
            f"`label_token_ids` and `mask_token_id` must be token ids below the vocabulary "
            f"size {vocabulary}. Received: {outside} outside it"
        )
    return label_token_ids


def _backbone_inputs(backbone, sequence_length, prefix=""):
    """The backbone's inputs: token ids, segment ids where it has them, padding mask (the
    layers' names start with `prefix`: a second sentence's)."""
    names = ["token_ids", "segment_ids", "padding_mask"]
    if not _backbones.has_segment_ids(backbone):
        names.remove("segment_ids")
    return {name: keras.Input((sequence_length,), dtype="int32", name=prefix + name) for name in names}


def _prompted_states(backbone, prompts, token_ids, segment_ids, padding_mask, depth, positions=None):
    """The backbone's sequence output with the prompt spliced in: prepended (prefix mode:
    the mask and segment ids extended) or over the placeholders (template mode); deep
    prompts written over the same positions before every further layer call. Positions
    count real tokens only (`positions`: a `_RealPositions` layer; a new one by default)."""
    prompt = prompts[0]
    prefix = prompt.placeholder_ids is None
    tokens = _backbones.embed_tokens(backbone, token_ids)
    if prefix:
        n = prompt.num_virtual_tokens
        tokens = prompt(tokens)
        full_mask = prompt.extend_padding_mask(padding_mask)
        if segment_ids is not None:
            segment_ids = ops.concatenate(
                [ops.zeros_like(segment_ids[:, :1]) * ops.ones((1, n), "int32"), segment_ids], axis=1)
    else:
        tokens = prompt(tokens, token_ids)
        full_mask = padding_mask

    def write_in(i, states):  # deep prompts: layer call i reads prompt i at the prompt's positions
        if i == 0:
            return states
        return prompts[i](states[:, n:]) if prefix else prompts[i](states, token_ids)

    if positions is None:
        positions = _RealPositions(name="real_positions")
    return _states(backbone, tokens, segment_ids, full_mask, positions,
                   before_layer=write_in if depth == "deep" else None)


def _states(backbone, token_embeddings, segment_ids, padding_mask, positions=None, before_layer=None):
    """The backbone's sequence output on token embeddings, positions counting real tokens
    only (`positions`: a `_RealPositions` layer; a new one by default)."""
    if positions is None:
        positions = _RealPositions()
    x = _backbones.finish_embeddings(backbone, token_embeddings, segment_ids, positions(padding_mask))
    return _backbones.run_transformer(backbone, x, padding_mask, before_layer=before_layer)


def _pooled(backbone, x, padding_mask, extra, pooling, name=None):
    """The text's states pooled (the text starts at `extra`); `name` names the pooling
    layers of the prompted sequence (the default names: "mean_pooling", "last_position")."""
    if pooling == "cls":
        return x[:, extra, :]
    if pooling == "last":
        last = _LastRealPosition(extra, name=name or "last_position")(padding_mask)
        return _gather_positions(x, last)[:, 0, :]
    # the text's tokens only: the prompt's states would weigh in as much as a
    # sentence of their length, and a frozen sentence encoder's mean is over the text
    return MaskedMeanPooling(dtype=backbone.dtype_policy, name=name or "mean_pooling")(
        x[:, extra:, :], padding_mask=padding_mask)


def _classifier(backbone, features, num_classes):
    """Dense(num_classes), in the backbone's dtype policy as keras-hub's task heads."""
    return keras.layers.Dense(num_classes, dtype=backbone.dtype_policy, name="classifier")(features)


def _similarity(backbone, x, token_ids, first, second, extra, pooling, num_classes, placeholder_ids):
    """Dense(num_classes) on [cos(a, b), cos(P a, b)] (the layer "similarities"): the
    first sentence pooled without the prompt and with it (`x`), against the second. All
    three passes run in the model's mode (in `fit`, with the backbone's dropout: Keras
    passes the model's `training` to every layer call of a functional graph, overriding
    a `training=False` given when it was built)."""
    prompted = _pooled(backbone, x, first["padding_mask"], extra, pooling)
    if placeholder_ids is None:
        own_mask = first["padding_mask"]
    else:  # the template's row without its placeholders
        own_mask = _WithoutTokens(placeholder_ids, name="without_placeholders")(
            token_ids, first["padding_mask"])
    plain = [
        _pooled(backbone, _states(backbone, _backbones.embed_tokens(backbone, ids), segments, mask),
                mask, 0, pooling, name=f"{side}_{pooling}_pooling")
        for side, ids, segments, mask in (
            ("first", token_ids, first.get("segment_ids"), own_mask),
            ("second", _CheckedTokenIds(_backbones.vocabulary_size(backbone))(second["token_ids"]),
             second.get("segment_ids"), second["padding_mask"]),
        )
    ]
    cosine = keras.layers.Dot(axes=-1, normalize=True, dtype=backbone.dtype_policy, name="cosine")
    similarities = keras.layers.Concatenate(name="similarities")(
        [cosine([plain[0], plain[1]]), cosine([prompted, plain[1]])])
    return _classifier(backbone, similarities, num_classes)


def _verbalizer(backbone, x, token_ids, padding_mask, extra, head, label_token_ids, mask_token_id,
                masked_lm_head):
    """The language-model head's logits of the label words at the scored position."""
    if head == "masked_lm":
        if masked_lm_head is None:
            masked_lm_head = _backbones.masked_lm_head(backbone)
        masked_lm_head.trainable = True
        position = _MaskPosition(mask_token_id, extra, name="mask_position")(token_ids)
        vocab_logits = masked_lm_head(x, mask_positions=position)
    else:
        if mask_token_id is None:
            position = _LastRealPosition(extra, name="last_position")(padding_mask)
        else:
            position = _MaskPosition(mask_token_id, extra - 1, name="mask_position")(token_ids)
        vocab_logits = _backbones.causal_lm_logits(backbone, _gather_positions(x, position))
    return ops.take(vocab_logits[:, 0, :], ops.convert_to_tensor(list(label_token_ids)), axis=1)


def _prompt_encoders(backbone, depth, anchor_token_ids, seed, **options):
    """The prompt: one `PromptEncoder` in the token-embedding space ("prompt_encoder");
    with depth="deep", also one per further Transformer layer call in the hidden space
    ("prompt_encoder_1", ...), each with its own dropout seed. Anchor tokens initialise
    the first from their embeddings and each deeper one from their states at that layer
    (the backbone run on the anchor tokens alone)."""
    validation.choice("depth", depth, DEPTHS)
    calls = _backbones.num_layer_calls(backbone) if depth == "deep" else 1
    prompts = [
        PromptEncoder(
            embedding_dim=_backbones.embedding_dim(backbone) if i == 0 else _backbones.hidden_dim(backbone),
            max_sequence_length=_backbones.max_sequence_length(backbone),
            seed=None if seed is None else seed + i,
            dtype=backbone.dtype_policy,
            name="prompt_encoder" if i == 0 else f"prompt_encoder_{i}",
            **options,
        )
        for i in range(calls)
    ]
    if anchor_token_ids is not None:
        prompts[0].initialize_from_tokens(_backbones.token_embedding(backbone), anchor_token_ids)
        if calls > 1:
            states = _backbones.layer_inputs(backbone, anchor_token_ids)
            for prompt, table in zip(prompts[1:], states[1:], strict=True):
                prompt.initialize_from_tokens(table, np.arange(len(table)))
    return prompts


@keras_space_export("keras_space.models.freeze_prompts")
def freeze_prompts(model):
    """The inference form of a P-tuned model: every `PromptEncoder` replaced by its `freeze()`.

    The returned model shares all other layers with `model`, has no prompt
    encoder weights, and gives the same outputs bit for bit in inference. Save
    it (`.keras` or `model.export()`) for serving; keep saving `model` itself to
    resume training (its `.keras` file holds the encoder). A `PTuningCausalLM`
    gives a `PTuningCausalLM` on the same backbone whose prompts are plain
    tables (it generates the same tokens).
    """
    frozen_prompts = getattr(model, "_frozen_prompts", None)  # PTuningCausalLM
    if frozen_prompts is not None:
        return frozen_prompts()

    def clone(layer):
        return layer.freeze() if isinstance(layer, PromptEncoder) else layer

    # an uncompiled view on the same layers: Keras compiles a clone of a compiled model
    # with its optimizer's config, which a LayerwiseLearningRate built for the trainable
    # model (its groups, one per variable) refuses, and a served model needs none
    view = (PTuningModel if isinstance(model, PTuningModel) else keras.Model)(
        model.input, model.output, name=model.name)
    return keras.models.clone_model(view, clone_function=clone)


@keras_space_export("keras_space.models.apply_prompt_template")
def apply_prompt_template(inputs, template, placeholder_ids, start_token=True, end_token=True):
    """Lay tokenised texts into a P-tuning template (numpy, for template mode).

    Args:
        inputs: the dict of a keras-hub preprocessor (`token_ids`,
            `padding_mask`, optionally `segment_ids`), each row
            `[start] text [end]` padded on the right or the left, e.g. BERT's
            `[CLS] text [SEP] pad...`.
        template: a list of token ids and exactly one `"text"` marker, e.g.
            `[p1, p2, "text", p3, mask_id]`; the row becomes
            `[CLS] p1 p2 text p3 [MASK] [SEP]`, the text truncated to keep the
            sequence length.
        placeholder_ids: the prompt's placeholder ids; the template must use at
            least one of them.
        start_token: bool, whether each row starts with a special token that
            stays first (BERT's `[CLS]`, GPT-2's `<|endoftext|>` with
            `add_start_token=True`). Defaults to `True`.
        end_token: bool, whether each row ends with a special token that stays
            last (BERT's `[SEP]`). Pass `False` for GPT-2 rows made with
            `add_end_token=False`, so that the template's last token is the
            last real one (where `head="causal_lm"` scores). Defaults to `True`.

    Returns:
        A dict like `inputs` (same sequence length, padded on the right).

    Example:

    ```python
    import numpy as np
    from keras_space.models import apply_prompt_template

    x = {"token_ids": np.array([[101, 7, 8, 102, 0, 0, 0, 0]]),
         "padding_mask": np.array([[1, 1, 1, 1, 0, 0, 0, 0]])}
    apply_prompt_template(x, [1, 2, "text", 3, 103], [1, 2, 3])["token_ids"]
    # [[101, 1, 2, 7, 8, 3, 103, 102]]
    ```
    """
    template = list(template)
    start = int(validation.strict_bool("start_token", start_token))
    end = int(validation.strict_bool("end_token", end_token))
    if template.count("text") != 1:
        raise ValueError(
            "`template` must contain the marker 'text' exactly once. "
            f"Received: template={template}"
        )
    fixed = [t for t in template if t != "text"]
    if not any(t in set(placeholder_ids) for t in fixed):
        raise ValueError(
            "The template has no placeholder tokens: it must use at least one of "
            f"placeholder_ids={list(placeholder_ids)}. Received: template={template}"
        )
    token_ids = np.asarray(inputs["token_ids"])
    mask = np.asarray(inputs["padding_mask"]).astype(bool)
    batch, length = token_ids.shape
    room = length - start - end - len(fixed)
    if room < 1:
        raise ValueError(
            f"Sequence too long: the template takes {len(fixed)} + {start + end} special "
            f"tokens, leaving no room for text in sequence length {length}. Use a longer "
            "sequence_length in the preprocessor or a shorter template."
        )
    cut = template.index("text")
    out_ids = np.zeros_like(token_ids)
    out_mask = np.zeros_like(np.asarray(inputs["padding_mask"]))
    for i in range(batch):
        real = list(token_ids[i, mask[i]])
        if len(real) < start + end:
            raise ValueError(
                f"Row {i} of `inputs` has {len(real)} real tokens, fewer than its special "
                f"tokens (start_token={start_token}, end_token={end_token})."
            )
        text = real[start : len(real) - end][:room]
        row = [*real[:start], *fixed[:cut], *text, *fixed[cut:], *real[len(real) - end :]]
        out_ids[i, : len(row)] = row
        out_mask[i, : len(row)] = 1
    result = dict(inputs)
    result["token_ids"] = out_ids
    result["padding_mask"] = out_mask
    if "segment_ids" in inputs:
        result["segment_ids"] = np.zeros_like(np.asarray(inputs["segment_ids"]))
    return result
