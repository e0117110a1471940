"""Deep prompts (`p_tuning_model(..., depth="deep")`, P-tuning v2) on every backbone family.

The reference runs keras-hub's own layers one by one: the embedding stack's output
from keras-hub's functional graph (a copy of the backbone whose token table holds the
first prompt at stand-in rows), then each Transformer layer call in keras-hub's own
order (ALBERT: its groups of shared layers, repeated), with that call's prompt written
over the prompt's positions in numpy before it, on rows padded on the right without
garbage. The model gets garbage at padded positions, padding on the right and the
left. In float64 both run the same layers on the same numbers, so they agree to
rounding (1e-10 on logits of order 1); in float32 to 2e-5, as the shallow tests. One
exception: on JAX, Keras's MultiHeadAttention computes float64 attention in float32
(1.6e-6 from a numpy float64 reference, measured), so rows laid out differently (left
padding) agree only to float32 rounding there: 2e-5.
"""

import keras
import numpy as np
import pytest

from keras_space.models import apply_prompt_template, freeze_prompts, p_tuning_model
from tests.backend import BACKEND, on_jax_too
from tests.models.p_tuning_backbones_test import (
    LABELS,
    MASK_ID,
    PLACEHOLDERS,
    STAND_INS,
    causal_head,
    inputs_for,
    mean_head,
    prefixed,
    randomise_prompts,
    rows,
    small_backbone,
)

pytestmark = pytest.mark.all_backends


def keras_hub_calls(backbone):
    """The Transformer layer calls in keras-hub's order (AlbertBackbone.__init__'s loop)."""
    layers = backbone.transformer_layers
    if isinstance(layers[0], list):  # ALBERT
        per_group = backbone.num_layers // len(layers)
        return [layer for group in layers for _ in range(per_group) for layer in group]
    return list(layers)


def hand_states(backbone, prompts, ids, mask, where):
    """keras-hub's layers run one by one; before call i >= 1, prompt i is written at
    `where` (a function of the (batch, seq, dim) array and the prompt, in place)."""
    copy = type(backbone).from_config(backbone.get_config())
    copy.set_weights(backbone.get_weights())
    table = np.asarray(copy.token_embedding.embeddings).copy()
    table[STAND_INS[: len(prompts[0])]] = prompts[0]
    copy.token_embedding.embeddings.assign(table)
    calls = keras_hub_calls(copy)
    assert len(calls) == len(prompts)
    first_input = calls[0]._inbound_nodes[0].input_tensors[0]  # keras-hub's embedding stack
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in copy.input:
        x["segment_ids"] = np.zeros_like(ids)
    states = np.asarray(keras.Model(copy.input, first_input)(x))
    causal = hasattr(copy, "layer_norm")  # GPT-2: decoder layers, a final LayerNorm
    for i, layer in enumerate(calls):
        if i > 0:
            states = states.copy()
            where(states, prompts[i])
        if causal:
            states = np.asarray(layer(states, decoder_padding_mask=mask))
        else:
            states = np.asarray(layer(states, padding_mask=mask))
    return np.asarray(copy.layer_norm(states)) if causal else states


CASES = on_jax_too([(kind, "float64") for kind in
                    ("bert", "electra", "albert", "roberta", "distilbert", "gpt2")]
                   + [("bert", "float32"), ("gpt2", "float32")])


@pytest.mark.parametrize("kind, dtype", CASES)
def test_prefix_prompts_at_every_layer_equal_the_layers_run_by_hand(kind, dtype):
    backbone = small_backbone(kind, dtype=dtype)
    n = 3
    if kind == "gpt2":
        model = p_tuning_model(backbone, num_virtual_tokens=n, head="causal_lm",
                               label_token_ids=LABELS, depth="deep")
    else:
        model = p_tuning_model(backbone, num_classes=2, num_virtual_tokens=n, depth="deep")
    prompts = randomise_prompts(model, seed=1)
    assert len(prompts) == len(keras_hub_calls(backbone)) > 1
    assert [p.shape[1] for p in prompts[1:]] == [8] * (len(prompts) - 1)  # the hidden width

    def at_the_prefix(states, prompt):
        states[:, :n] = prompt

    clean_ids, clean_mask = rows(0, garbage=False)
    ref_ids, ref_mask = prefixed(clean_ids, clean_mask, n)
    states = hand_states(backbone, prompts, ref_ids, ref_mask, at_the_prefix)
    if kind == "gpt2":
        want = causal_head(backbone, states, ref_mask.sum(1) - 1)
    else:
        want = mean_head(model, states[:, n:], clean_mask)
    for left in (False, True):
        exact = dtype == "float64" and not (left and BACKEND == "jax")  # (module docstring)
        got = np.asarray(model(inputs_for(model, *rows(0, left=left))))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 if exact else 2e-5, err_msg=f"left={left}")
    # the deep prompts matter: the same model without them gives other logits
    shallow = np.asarray(p_tuning_model(backbone, num_virtual_tokens=n, **(
        dict(head="causal_lm", label_token_ids=LABELS) if kind == "gpt2" else dict(num_classes=2)))(
        inputs_for(model, *rows(0))))
    assert np.abs(shallow - want).max() > 1e-3


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_template_prompts_at_every_layer_equal_the_layers_run_by_hand(kind):
    """Placeholders inside the row: each layer's prompt replaces the placeholders' states."""
    backbone = small_backbone(kind, dtype="float64")
    causal = kind == "gpt2"
    model = p_tuning_model(
        backbone, num_virtual_tokens=3, placeholder_ids=PLACEHOLDERS, depth="deep",
        head="causal_lm" if causal else "masked_lm", label_token_ids=LABELS, mask_token_id=MASK_ID,
    )
    prompts = randomise_prompts(model, seed=2)
    template = ["text", 1, 2, 3, MASK_ID] if causal else [1, "text", 2, MASK_ID, 3]
    x = apply_prompt_template(dict(zip(("token_ids", "padding_mask"), rows(3, garbage=False),
                                       strict=True)),
                              template, PLACEHOLDERS, end_token=not causal)
    ids = x["token_ids"]
    ref_ids = ids.copy()
    for p, s in zip(PLACEHOLDERS, STAND_INS, strict=True):
        ref_ids[ref_ids == p] = s

    def at_the_placeholders(states, prompt):
        for j, p in enumerate(PLACEHOLDERS):
            states[ids == p] = prompt[j]

    states = hand_states(backbone, prompts, ref_ids, x["padding_mask"], at_the_placeholders)
    slot = np.argmax(ids == MASK_ID, axis=1)
    if causal:
        want = causal_head(backbone, states, slot - 1)
    else:
        head = model.get_layer("masked_lm_head")
        want = np.asarray(head(states, mask_positions=slot[:, None]))[:, 0, LABELS]
    garbage = ids + (1 - x["padding_mask"]) * 40
    got = np.asarray(model(inputs_for(model, garbage, x["padding_mask"])))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_anchored_deep_prompts_start_where_the_anchors_are():
    """Each deeper prompt starts at the anchor tokens' states at that layer: on GPT-2 a
    prefix sees only itself, so the deep model starts equal to the shallow one. In
    float64 the states are the same but for one rounding: prompt tables are float32
    (relative 6e-8 on states of order 1; through two layers and the tied head, logits of
    order 0.1 move by 1e-7 at most)."""
    backbone = small_backbone("gpt2", dtype="float64")
    options = dict(num_virtual_tokens=3, head="causal_lm", label_token_ids=LABELS,
                   anchor_token_ids=[5, 6, 7])
    deep = p_tuning_model(backbone, depth="deep", **options)
    shallow = p_tuning_model(backbone, **options)
    x = inputs_for(deep, *rows(4))
    np.testing.assert_allclose(np.asarray(deep(x)), np.asarray(shallow(x)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_deep_prompts_freeze_and_reload_with_the_backbone_frozen(kind, tmp_path):
    """freeze_prompts: bit-identical; `.keras` reload: the same outputs and exactly the
    prompts (every layer's) and the head train."""
    backbone = small_backbone(kind)
    options = (dict(head="causal_lm", label_token_ids=LABELS) if kind == "gpt2"
               else dict(num_classes=2))
    model = p_tuning_model(backbone, num_virtual_tokens=2, depth="deep", encoder="lstm", **options)
    randomise_prompts(model, seed=7)
    x = inputs_for(model, *rows(8))
    before = np.asarray(model(x))
    frozen = freeze_prompts(model)
    np.testing.assert_array_equal(np.asarray(frozen(x)), before)
    assert not frozen.trainable_weights or kind != "gpt2"
    path = str(tmp_path / "deep.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    trainable = [w.path for w in model.trainable_weights]
    layers = {p.split("/")[0] for p in trainable}
    assert layers >= {"prompt_encoder", "prompt_encoder_1"}
    assert all(p.startswith(("prompt_encoder", "classifier/")) for p in trainable)
    assert [w.path for w in loaded.trainable_weights] == trainable
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)


def test_bad_depth_is_refused_naming_it():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"supported: .*Received: backbone=Sequential"):
        p_tuning_model(plain, num_classes=2, depth="deep")  # a backbone the adapter does not know
    with pytest.raises(ValueError, match=r"depth.*'wide'"):
        p_tuning_model(small_backbone("bert"), num_classes=2, depth="wide")
    with pytest.raises(ValueError, match="depth"):
        p_tuning_model(small_backbone("bert"), num_classes=2, depth=None)
