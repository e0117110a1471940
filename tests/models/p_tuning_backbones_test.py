"""p_tuning_model on every supported keras-hub backbone family, against keras-hub itself.

Small randomly initialised backbones built from their configs (no pretrained
GPT-2 can be downloaded here). The reference is independent of keras_space's
backbone adapter: a copy of the backbone whose token table holds the prompt
vectors at the rows of stand-in token ids, run by keras-hub's own functional
forward on the spliced id sequence, padded on the right, without garbage.
"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_space.models import apply_prompt_template, freeze_prompts, p_tuning_model

pytestmark = pytest.mark.all_backends

VOCAB = 64
STAND_INS = [56, 57, 58]  # rows of the reference copy's table that carry the prompt
PLACEHOLDERS = [1, 2, 3]
MASK_ID = 4
LABELS = [10, 11]
TEXT_LENGTHS = [7, 4, 2]
LENGTH = 9


def small_backbone(kind, dtype=None):
    m = keras_hub.models
    common = dict(num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=16,
                  max_sequence_length=32, dropout=0.0, dtype=dtype)
    if kind == "electra":  # embedding width below the hidden width: a projection
        return m.ElectraBackbone(vocab_size=VOCAB, embedding_dim=4, **common)
    common["vocabulary_size"] = VOCAB
    if kind == "albert":  # 4 layer calls over 2 groups of 2 shared layers
        common.update(num_layers=4, embedding_dim=4, num_groups=2, num_inner_repetitions=2)
        return m.AlbertBackbone(**common)
    cls = {"bert": m.BertBackbone, "roberta": m.RobertaBackbone,
           "distilbert": m.DistilBertBackbone, "gpt2": m.GPT2Backbone}[kind]
    return cls(**common)


FAMILIES = ["bert", "electra", "albert", "roberta", "distilbert", "gpt2"]


def rows(seed, left=False, garbage=True):
    """Token ids 5..49 with TEXT_LENGTHS real tokens, padding on the right or left."""
    rng = np.random.default_rng(seed)
    text = rng.integers(5, 50, (len(TEXT_LENGTHS), LENGTH)).astype("int32")
    ids = rng.integers(5, 50, text.shape).astype("int32") if garbage else np.zeros_like(text)
    mask = np.zeros_like(ids)
    for i, n in enumerate(TEXT_LENGTHS):
        where = slice(LENGTH - n, None) if left else slice(0, n)
        ids[i, where], mask[i, where] = text[i, :n], 1
    return ids, mask


def right_aligned(ids, mask):
    """The same rows padded on the right with zeros."""
    out_ids, out_mask = np.zeros_like(ids), np.zeros_like(mask)
    for i in range(len(ids)):
        real = ids[i, mask[i] == 1]
        out_ids[i, : len(real)], out_mask[i, : len(real)] = real, 1
    return out_ids, out_mask


def inputs_for(model, ids, mask):
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in model.input:
        x["segment_ids"] = np.zeros_like(ids)
    return x


def randomise_prompts(model, seed, scale=0.3):
    """Every prompt-encoder weight random (the residual encoders' last layer starts at
    zero); each layer call's prompt (numpy), in call order: "prompt_encoder", then deep
    prompts' "prompt_encoder_1", ..."""
    def call_index(layer):
        return int(layer.name.rsplit("_", 1)[1]) if layer.name[-1].isdigit() else 0

    rng = np.random.default_rng(seed)
    prompts = []
    for layer in sorted((la for la in model.layers if la.name.startswith("prompt_encoder")),
                        key=call_index):
        for w in layer.weights:
            w.assign(rng.normal(0, scale, w.shape).astype(w.dtype))
        prompts.append(np.asarray(layer.prompt_embeddings()))
    return prompts


def randomise_prompt(model, seed):
    """The one prompt of a shallow model, randomised (`randomise_prompts`)."""
    (prompt,) = randomise_prompts(model, seed)
    return prompt


def reference_states(backbone, prompt, ids, mask):
    """keras-hub's own forward on `ids`, STAND_INS rows of a table copy set to `prompt`."""
    copy = type(backbone).from_config(backbone.get_config())
    copy.set_weights(backbone.get_weights())
    table = np.asarray(copy.token_embedding.embeddings).copy()
    table[STAND_INS[: len(prompt)]] = prompt
    copy.token_embedding.embeddings.assign(table)
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in copy.input:
        x["segment_ids"] = np.zeros_like(ids)
    out = copy(x)
    return np.asarray(out["sequence_output"] if isinstance(out, dict) else out)


def prefixed(ids, mask, n):
    """[stand-in ids..., row] with the prompt positions real."""
    b = len(ids)
    return (np.concatenate([np.tile(STAND_INS[:n], (b, 1)), ids], 1).astype("int32"),
            np.concatenate([np.ones((b, n), "int32"), mask], 1))


def mean_head(model, states, mask):
    kernel, bias = model.get_layer("classifier").get_weights()
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled @ kernel + bias


def causal_head(backbone, states, positions):
    table = np.asarray(backbone.token_embedding.embeddings)
    picked = states[np.arange(len(states)), positions]
    return picked @ table[LABELS].T


@pytest.mark.parametrize("kind", FAMILIES)
def test_prefix_mode_equals_keras_hub_on_the_spliced_sequence(kind):
    """Prefix, random prompt, garbage at padded positions, right and left padding."""
    backbone = small_backbone(kind)
    n = 3
    if kind == "gpt2":
        model = p_tuning_model(backbone, num_virtual_tokens=n, head="causal_lm", label_token_ids=LABELS)
    else:
        model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=n)
    prompt = randomise_prompt(model, seed=1)
    clean_ids, clean_mask = rows(0, garbage=False)
    ref_ids, ref_mask = prefixed(clean_ids, clean_mask, n)
    states = reference_states(backbone, prompt, ref_ids, ref_mask)
    if kind == "gpt2":
        want = causal_head(backbone, states, ref_mask.sum(1) - 1)
    else:
        want = mean_head(model, states[:, n:], clean_mask)  # the text's states only
    for left in (False, True):
        ids, mask = rows(0, left=left)
        got = np.asarray(model(inputs_for(model, ids, mask)))
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"left={left}")
    assert len(model.trainable_weights) == len(model.get_layer("prompt_encoder").trainable_weights) + (
        0 if kind == "gpt2" else 2
    )


@pytest.mark.parametrize("kind", ["bert", "albert", "roberta", "gpt2"])
def test_template_mode_equals_keras_hub_on_the_spliced_sequence(kind):
    """Placeholders inside the row; masked-LM / causal-LM verbalizers at the slot."""
    backbone = small_backbone(kind)
    causal = kind == "gpt2"
    model = p_tuning_model(
        backbone, num_virtual_tokens=3, placeholder_ids=PLACEHOLDERS,
        head="causal_lm" if causal else "masked_lm", label_token_ids=LABELS, mask_token_id=MASK_ID,
    )
    prompt = randomise_prompt(model, seed=2)
    ids, mask = rows(3, garbage=False)
    # encoders: [start] p1 text p2 [MASK] p3 [end]; GPT-2: [start] text p1 p2 p3 [slot]
    template = ["text", 1, 2, 3, MASK_ID] if causal else [1, "text", 2, MASK_ID, 3]
    x = apply_prompt_template({"token_ids": ids, "padding_mask": mask}, template, PLACEHOLDERS,
                              end_token=not causal)
    ref_ids = x["token_ids"].copy()
    for p, s in zip(PLACEHOLDERS, STAND_INS, strict=True):
        ref_ids[ref_ids == p] = s
    states = reference_states(backbone, prompt, ref_ids, x["padding_mask"])
    slot = np.argmax(x["token_ids"] == MASK_ID, axis=1)
    if causal:
        want = causal_head(backbone, states, slot - 1)
    else:
        head = model.get_layer("masked_lm_head")
        want = np.asarray(head(states, mask_positions=slot[:, None]))[:, 0, LABELS]
    garbage = x["token_ids"] + (1 - x["padding_mask"]) * 40  # garbage at padded positions
    got = np.asarray(model(inputs_for(model, garbage, x["padding_mask"])))
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_gpt2_prefix_never_sees_the_text_and_last_pooling():
    """Causal consistency: the virtual tokens' states do not depend on the text after them."""
    backbone = small_backbone("gpt2")
    model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=3, pooling="last")
    prompt = randomise_prompt(model, seed=4)
    ids, mask = rows(5, garbage=False)
    ref_ids, ref_mask = prefixed(ids, mask, 3)
    states = reference_states(backbone, prompt, ref_ids, ref_mask)
    other = reference_states(backbone, prompt, prefixed(rows(6, garbage=False)[0], mask, 3)[0], ref_mask)
    np.testing.assert_allclose(states[:, :3], other[:, :3], atol=1e-6)
    kernel, bias = model.get_layer("classifier").get_weights()
    want = states[np.arange(3), ref_mask.sum(1) - 1] @ kernel + bias
    left_ids, left_mask = rows(5, left=True)
    np.testing.assert_allclose(np.asarray(model(inputs_for(model, *rows(5)))), want, atol=2e-5)
    np.testing.assert_allclose(np.asarray(model(inputs_for(model, left_ids, left_mask))), want, atol=2e-5)


@pytest.mark.parametrize("kind", FAMILIES)
def test_freeze_prompts_and_keras_reload_keep_the_backbone_frozen(kind, tmp_path):
    """Bit-identical frozen prompts; a reloaded model trains exactly the prompt and the head.

    (Fit, save and resume with the optimizer state is tested on the real MiniLM.)
    """
    backbone = small_backbone(kind)
    if kind == "gpt2":
        model = p_tuning_model(backbone, num_virtual_tokens=2, head="causal_lm", label_token_ids=LABELS)
    else:
        model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=2)
    randomise_prompt(model, seed=7)
    x = inputs_for(model, *rows(8))
    before = np.asarray(model(x))
    np.testing.assert_array_equal(np.asarray(freeze_prompts(model)(x)), before)
    path = str(tmp_path / f"{kind}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    trainable = [w.path for w in model.trainable_weights]
    assert trainable and all(p.startswith(("prompt_encoder/", "classifier/")) for p in trainable)
    assert [w.path for w in loaded.trainable_weights] == trainable
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)


@pytest.mark.tensorflow_only("SavedModel")
def test_frozen_prompts_export_to_a_saved_model_that_serves_the_same_logits(tmp_path):
    import tensorflow as tf

    model = p_tuning_model(small_backbone("bert"), num_classes=2, num_virtual_tokens=2,
                           encoder="mlp")
    randomise_prompt(model, seed=3)
    x = inputs_for(model, *rows(9))
    frozen = freeze_prompts(model)
    logits = np.asarray(model(x))
    frozen.export(tmp_path / "served", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "served"))  # kept: it owns the variables
    served = reloaded.serve({k: tf.constant(v, "int32") for k, v in x.items()})
    np.testing.assert_allclose(served, logits, atol=1e-6)


def test_refusals_name_the_backbone_and_the_way_out():
    gpt2, bert = small_backbone("gpt2"), small_backbone("bert")
    with pytest.raises(ValueError, match="GPT2Backbone is causal: use head='causal_lm'"):
        p_tuning_model(gpt2, head="masked_lm", label_token_ids=LABELS, mask_token_id=MASK_ID)
    with pytest.raises(ValueError, match="BertBackbone is a bidirectional encoder"):
        p_tuning_model(bert, head="causal_lm", label_token_ids=LABELS)
    with pytest.raises(ValueError, match="pooling='last' or 'mean'"):
        p_tuning_model(gpt2, num_classes=2, pooling="cls")
    with pytest.raises(ValueError, match="masked_lm_head"):
        p_tuning_model(gpt2, head="causal_lm", label_token_ids=LABELS, masked_lm_head=keras.layers.Dense(2))
    with pytest.raises(ValueError, match="below the vocabulary size 64"):
        p_tuning_model(gpt2, head="causal_lm", label_token_ids=[3, 64])
    with pytest.raises(ValueError, match="supported: keras_hub.models.BertBackbone.*GPT2Backbone"):
        p_tuning_model(keras.Sequential([keras.layers.Dense(2)]), num_classes=2)
    model = p_tuning_model(gpt2, num_virtual_tokens=2, placeholder_ids=[1, 2], head="causal_lm",
                           label_token_ids=LABELS, mask_token_id=MASK_ID)
    ids = np.array([[MASK_ID, 1, 2, 7]], "int32")  # nothing before the slot
    with pytest.raises(Exception, match="something before the mask token 4"):
        model(inputs_for(model, ids, np.ones_like(ids)))
    last = p_tuning_model(gpt2, num_virtual_tokens=2, head="causal_lm", label_token_ids=LABELS)
    empty = np.zeros((2, 4), "int32")
    with pytest.raises(Exception, match="at least one real token in every row"):
        last(inputs_for(last, empty + 5, np.array([[1, 1, 0, 0], [0, 0, 0, 0]], "int32")))
    with pytest.raises(ValueError, match="end_token"):
        apply_prompt_template({"token_ids": empty, "padding_mask": empty}, ["text", 1], [1], end_token="no")
    with pytest.raises(ValueError, match="fewer than its special tokens"):
        apply_prompt_template({"token_ids": empty, "padding_mask": empty}, ["text", 1], [1])
