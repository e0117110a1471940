"""P-tuning a pretrained Transformer backbone: frozen backbone, trainable prompt and head."""

import keras
import numpy as np
from keras import ops

from keras_space.api_export import keras_space_export
from keras_space.layers.masked_mean_pooling import MaskedMeanPooling
from keras_space.layers.prompt_encoder import PromptEncoder
from keras_space.models import _backbones
from keras_space.utils import validation

HEADS = ("classification", "masked_lm")
POOLINGS = ("cls", "mean")

@keras.saving.register_keras_serializable(package="keras_space")
class _MaskPosition(keras.layers.Layer):
    """(batch, 1) position of the first `mask_token_id` in each row, plus `offset`.

    Refuses a row without the mask token (it would silently score some position).
    """

    def __init__(self, mask_token_id, offset=0, **kwargs):
        super().__init__(**kwargs)
        self.mask_token_id = validation.non_negative_int("mask_token_id", mask_token_id)
        self.offset = validation.non_negative_int("offset", offset)

    def call(self, token_ids):
        is_mask = ops.equal(token_ids, self.mask_token_id)
        is_mask = validation.holds(
            "token_ids", is_mask, ops.any(is_mask, axis=1),
            f"the mask token {self.mask_token_id} in every row (the masked-LM head scores "
            "the label words there)",
        )
        return ops.argmax(ops.cast(is_mask, "int32"), axis=1)[:, None] + self.offset

    def compute_output_spec(self, token_ids):
        return keras.KerasTensor((token_ids.shape[0], 1), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "mask_token_id": self.mask_token_id, "offset": self.offset}


@keras_space_export("keras_space.models.PTuningModel")
class PTuningModel(keras.Model):
    """The functional model `p_tuning_model` returns.

    A plain functional model, except that it keeps its frozen layers frozen
    through `.keras` save/load: Keras restores `trainable=False` on a layer
    before the layer builds its sublayers (keras-hub's `TransformerEncoder`
    creates its attention and feed-forward layers in `build()`), and those
    sublayers then come back trainable, so a reloaded frozen backbone would
    train and the saved optimizer state would not fit. The constructor
    re-applies every layer's `trainable=False` to its sublayers (through
    `True` first: on the TensorFlow backend, assigning an attribute the value
    it already holds is skipped, setter included).
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        for layer in self._flatten_layers(include_self=False):
            if not layer.trainable:
                layer.trainable = True
                layer.trainable = False


@keras_space_export("keras_space.models.p_tuning_model")
def p_tuning_model(
    backbone,
    num_classes=None,
    num_virtual_tokens=8,
    encoder="mlp",
    encoder_hidden_dim=None,
    dropout=0.0,
    placeholder_ids=None,
    anchor_token_ids=None,
    head="classification",
    pooling="cls",
    label_token_ids=None,
    mask_token_id=None,
    masked_lm_head=None,
    sequence_length=None,
    train_backbone=False,
    seed=None,
):
    """P-tune a keras-hub `BertBackbone` (or a backbone with the same parts).

    Builds a functional model on the backbone's own layers with a
    `PromptEncoder` spliced in after the token embedding: as a prefix
    (`placeholder_ids=None`: the prompt is prepended, the padding mask and
    segment ids are extended, positions count from the first virtual token) or
    in template mode (the embeddings of the `placeholder_ids` tokens, placed in
    the text by `apply_prompt_template`, are replaced). The backbone is frozen
    (`train_backbone=False`, P-tuning's few-shot setting), so the trainable
    weights are exactly the prompt encoder's and the head's; with
    `train_backbone=True` everything trains.

    Heads:
        - `"classification"`: Dense(num_classes) on the [CLS] state
          (`pooling="cls"`) or on the padding-aware mean of the sequence
          (`pooling="mean"`, the sentence-encoder way).
        - `"masked_lm"`: PET/P-tuning style. The masked-LM head scores the
          `label_token_ids` (one label word per class) at the position of
          `mask_token_id`. Pass the backbone's pretrained head as
          `masked_lm_head` when it has one (e.g.
          `keras_hub.models.BertMaskedLM.from_preset(...).masked_lm_head`);
          otherwise a `keras_hub.layers.MaskedLMHead` tied to the (frozen)
          token embedding is created and trained.

    Args:
        backbone: a `keras_hub.models.BertBackbone` or a model with the same
            attributes (`token_embedding`, `position_embedding`,
            `segment_embedding` (optional), `embeddings_add`,
            `embeddings_layer_norm`, `embeddings_dropout`, `transformer_layers`).
            Its `trainable` flag is set to `train_backbone`.
        num_classes: number of classes (classification head). Defaults to `None`.
        num_virtual_tokens, encoder, encoder_hidden_dim, dropout, placeholder_ids:
            passed to `PromptEncoder`. Default to `8`, `"mlp"`, `None`, `0.0`
            and `None` (prefix mode).
        anchor_token_ids: optional token ids whose embeddings initialise the
            virtual tokens (e.g. the ids of a hand-written prompt). Defaults to `None`.
        head: `"classification"` or `"masked_lm"`. Defaults to `"classification"`.
        pooling: `"cls"` or `"mean"` (classification head). Defaults to `"cls"`.
        label_token_ids: one token id per class (masked-LM head). Defaults to `None`.
        mask_token_id: the `[MASK]` id (masked-LM head); the first occurrence
            in each row is scored. Defaults to `None`.
        masked_lm_head: optional pretrained masked-LM head layer. Defaults to `None`.
        sequence_length: optional static input length; checked against the
            backbone's position table when given (by the `PromptEncoder`).
            Defaults to `None`.
        train_backbone: bool, whether the backbone trains too. Defaults to `False`.
        seed: seed of the prompt encoder's dropout. Defaults to `None`.

    Returns:
        A `PTuningModel` (a functional `keras.Model`) taking the backbone's input dict (`token_ids`,
        `segment_ids`, `padding_mask`) and returning (batch, num_classes)
        logits. Its `PromptEncoder` is the layer named `"prompt_encoder"`.

    Example:

    ```python
    import keras, keras_hub
    from keras_space.models import p_tuning_model
    from keras_space.utils import minilm_path

    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    preprocess = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        minilm_path(), sequence_length=64
    )
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=8, encoder="lstm")
    model.compile(keras.optimizers.AdamW(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess(["great film", "dull plot"]), [1, 0], epochs=1)
    ```

    References:
        - Liu et al., "GPT Understands, Too", https://arxiv.org/abs/2103.10385
    """
    _backbones.check_embedding_stack(backbone)
    validation.choice("head", head, HEADS)
    validation.choice("pooling", pooling, POOLINGS)
    validation.positive_int("sequence_length", sequence_length, allow_none=True)
    train_backbone = validation.strict_bool("train_backbone", train_backbone)
    if head == "classification":
        validation.positive_int("num_classes", num_classes)
    else:
        label_token_ids = validation.int_sequence("label_token_ids", label_token_ids, minimum=0)
        validation.non_negative_int("mask_token_id", mask_token_id)
        vocabulary = _backbones.vocabulary_size(backbone)
        outside = [i for i in label_token_ids + [mask_token_id] if i >= vocabulary]
        if outside:
            raise ValueError(
                f"`label_token_ids` and `mask_token_id` must be token ids below the vocabulary "
                f"size {vocabulary}. Received: {outside} outside it"
            )
    hidden_dim = _backbones.hidden_dim(backbone)
    max_len = _backbones.max_sequence_length(backbone)
    prefix = placeholder_ids is None
    extra = num_virtual_tokens if prefix else 0
    prompt = PromptEncoder(
        num_virtual_tokens,
        hidden_dim,
        encoder=encoder,
        encoder_hidden_dim=encoder_hidden_dim,
        dropout=dropout,
        placeholder_ids=placeholder_ids,
        max_sequence_length=max_len,
        seed=seed,
        dtype=backbone.dtype_policy,
        name="prompt_encoder",
    )
    if anchor_token_ids is not None:
        prompt.initialize_from_tokens(_backbones.token_embedding(backbone), anchor_token_ids)

    inputs = {
        name: keras.Input((sequence_length,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask")
    }
    token_ids = inputs["token_ids"]
    segment_ids = inputs["segment_ids"]
    padding_mask = inputs["padding_mask"]
    tokens = _backbones.embed_tokens(backbone, token_ids)
    if prefix:
        tokens = prompt(tokens)
        padding_mask = prompt.extend_padding_mask(padding_mask)
        segment_ids = ops.concatenate(
            [ops.zeros_like(segment_ids[:, :1]) * ops.ones((1, num_virtual_tokens), "int32"),
             segment_ids],
            axis=1,
        )
    else:
        tokens = prompt(tokens, token_ids)
    x = _backbones.finish_embeddings(backbone, tokens, segment_ids)
    x = _backbones.run_transformer(backbone, x, padding_mask)

    if head == "classification":
        if pooling == "cls":
            features = x[:, extra, :]
        else:
            features = MaskedMeanPooling(name="mean_pooling")(x, padding_mask=padding_mask)
        logits = keras.layers.Dense(num_classes, name="classifier")(features)
    else:
        if masked_lm_head is None:
            masked_lm_head = _backbones.masked_lm_head(backbone)
        masked_lm_head.trainable = True
        position = _MaskPosition(mask_token_id, extra, name="mask_position")(token_ids)
        vocab_logits = masked_lm_head(x, mask_positions=position)[:, 0, :]
        logits = ops.take(vocab_logits, ops.convert_to_tensor(list(label_token_ids)), axis=1)
    backbone.trainable = train_backbone  # last: a refused model leaves the backbone as it was
    return PTuningModel(inputs, logits, name="p_tuning_model")


@keras_space_export("keras_space.models.freeze_prompts")
def freeze_prompts(model):
    """The inference form of a P-tuned model: every `PromptEncoder` replaced by its `freeze()`.

    The returned model shares all other layers with `model`, has no prompt
    encoder weights, and gives the same outputs bit for bit in inference. Save
    it (`.keras` or `model.export()`) for serving; keep saving `model` itself to
    resume training (its `.keras` file holds the encoder).
    """

    def clone(layer):
        return layer.freeze() if isinstance(layer, PromptEncoder) else layer

    frozen = keras.models.clone_model(model, clone_function=clone)
    return frozen


@keras_space_export("keras_space.models.apply_prompt_template")
def apply_prompt_template(inputs, template, placeholder_ids):
    """Lay tokenised texts into a P-tuning template (numpy, for template mode).

    Args:
        inputs: the dict of a keras-hub BERT preprocessor (`token_ids`,
            `padding_mask`, optionally `segment_ids`), each row
            `[CLS] text [SEP] pad...`.
        template: a list of token ids and exactly one `"text"` marker, e.g.
            `[p1, p2, "text", p3, mask_id]`; the row becomes
            `[CLS] p1 p2 text p3 [MASK] [SEP]`, the text truncated to keep the
            sequence length.
        placeholder_ids: the prompt's placeholder ids; the template must use at
            least one of them.

    Returns:
        A dict like `inputs` (same sequence length).
    """
    template = list(template)
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
    room = length - 2 - len(fixed)
    if room < 1:
        raise ValueError(
            f"Sequence too long: the template takes {len(fixed)} + 2 special tokens, "
            f"leaving no room for text in sequence length {length}. Use a longer "
            "sequence_length in the preprocessor or a shorter template."
        )
    cut = template.index("text")
    out_ids = np.zeros_like(token_ids)
    out_mask = np.zeros_like(np.asarray(inputs["padding_mask"]))
    for i in range(batch):
        real = token_ids[i, mask[i]]
        text = list(real[1:-1][:room])
        row = [real[0], *fixed[:cut], *text, *fixed[cut:], real[-1]]
        out_ids[i, : len(row)] = row
        out_mask[i, : len(row)] = 1
    result = dict(inputs)
    result["token_ids"] = out_ids
    result["padding_mask"] = out_mask
    if "segment_ids" in inputs:
        result["segment_ids"] = np.zeros_like(np.asarray(inputs["segment_ids"]))
    return result
