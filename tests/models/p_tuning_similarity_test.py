"""`p_tuning_model(..., head="similarity")`: [cos(a, b), cos(P a, b)] into a Dense head.

Reference: keras-hub's own forward (the table-copy reference of p_tuning_backbones_test)
on the prompted first sentence, on the first sentence alone (the template's row without
its placeholders) and on the second, pooled, the cosines and the head in numpy; float32,
2e-5 as the other prompt tests. The model gets garbage at padded positions and the
second sentence padded on the left.
"""

import keras
import numpy as np
import pytest

from keras_space.models import (
    apply_prompt_template,
    freeze_prompts,
    merge_lora,
    p_tuning_model,
)
from tests.models.p_tuning_backbones_test import (
    STAND_INS,
    prefixed,
    randomise_prompts,
    reference_states,
    rows,
    small_backbone,
)

pytestmark = pytest.mark.all_backends

SLOT = 1


def cosine(u, v):
    return np.sum(u * v, axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))


def mean(states, mask):
    return (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def last(states, mask):
    return states[np.arange(len(states)), mask.sum(1) - 1]


def with_garbage(x):
    return dict(x, token_ids=np.where(x["padding_mask"] == 1, x["token_ids"], 33))


def side(model, ids, mask):
    """One sentence's input dict (the model takes two: [first, second])."""
    x = {"token_ids": ids, "padding_mask": mask}
    if "segment_ids" in model.input[0]:
        x["segment_ids"] = np.zeros_like(ids)
    return x


@pytest.mark.parametrize("kind, mode", [("bert", "template"), ("roberta", "prefix"), ("gpt2", "prefix")])
def test_similarity_head_equals_keras_hub_cosines(kind, mode, tmp_path):
    backbone = small_backbone(kind)
    pooling = "last" if kind == "gpt2" else "mean"
    pool = last if kind == "gpt2" else mean
    template = mode == "template"
    model = p_tuning_model(backbone, num_classes=3, head="similarity", pooling=pooling,
                           num_virtual_tokens=1 if template else 2,
                           placeholder_ids=[SLOT] if template else None)
    (prompt,) = randomise_prompts(model, seed=1)
    kernel, bias = (np.asarray(w) for w in model.get_layer("classifier").weights)

    a_ids, a_mask = rows(2, garbage=False)
    b_ids, b_mask = rows(3, garbage=False)
    if template:  # [start] [P] a [end]
        first = apply_prompt_template(side(model, a_ids, a_mask), [SLOT, "text"], [SLOT])
        ref_ids = np.where(first["token_ids"] == SLOT, STAND_INS[0], first["token_ids"])
        u = pool(reference_states(backbone, prompt, ref_ids, first["padding_mask"]), first["padding_mask"])
        # a alone: the template's row without the placeholder (the text itself may be cut)
        kept = [row[m == 1][row[m == 1] != SLOT] for row, m in zip(first["token_ids"], first["padding_mask"],
                                                                  strict=True)]
        a_ids, a_mask = np.zeros_like(a_ids), np.zeros_like(a_mask)
        for i, row in enumerate(kept):
            a_ids[i, : len(row)], a_mask[i, : len(row)] = row, 1
    else:
        first = side(model, *rows(2, left=True))
        ref_ids, ref_mask = prefixed(a_ids, a_mask, 2)
        states = reference_states(backbone, prompt, ref_ids, ref_mask)
        u = pool(states[:, 2:], a_mask)  # the text's states (prefix excluded)
    u0 = pool(reference_states(backbone, prompt, a_ids, a_mask), a_mask)
    v = pool(reference_states(backbone, prompt, b_ids, b_mask), b_mask)
    want = np.stack([cosine(u0, v), cosine(u, v)], axis=1) @ kernel + bias

    second = side(model, *rows(3, left=True))  # garbage, left padding
    x = [with_garbage(first), second]
    np.testing.assert_allclose(np.asarray(model(x)), want, atol=2e-5)
    similarities = keras.Model(model.input, model.get_layer("similarities").output)
    np.testing.assert_allclose(np.asarray(similarities(x)), np.stack([cosine(u0, v), cosine(u, v)], 1),
                               atol=2e-6)
    # only the prompt and the head train; frozen prompts and a reload give the same logits
    assert all(w.path.startswith(("prompt_encoder/", "classifier/")) for w in model.trainable_weights)
    np.testing.assert_array_equal(np.asarray(freeze_prompts(model)(x)), np.asarray(model(x)))
    model.save(tmp_path / "similarity.keras")
    np.testing.assert_array_equal(np.asarray(keras.saving.load_model(tmp_path / "similarity.keras")(x)),
                                  np.asarray(model(x)))


def test_similarity_head_refusals():
    bert = small_backbone("bert")
    with pytest.raises(ValueError, match="num_classes"):
        p_tuning_model(bert, head="similarity")
    with pytest.raises(ValueError, match="pooling='last' or 'mean'"):
        p_tuning_model(small_backbone("gpt2"), num_classes=2, head="similarity", pooling="cls")
    model = p_tuning_model(bert, num_classes=2, head="similarity", num_virtual_tokens=2)
    ids, mask = rows(4)
    with pytest.raises(Exception, match="token_ids"):  # the second sentence's ids are checked too
        model([side(model, ids, mask), side(model, ids + 64, mask)])


def test_similarity_head_with_lora_under_mixed_bfloat16():
    """The same weights in a mixed_bfloat16 model: finite logits near the float32 ones
    (bfloat16 keeps 8 significant bits: 4e-3 relative rounding per operation, through two
    layers, three passes and the cosines: 5e-2 on logits of order 1), merged alike."""
    exact = p_tuning_model(small_backbone("bert"), num_classes=3, head="similarity",
                           num_virtual_tokens=2, lora_rank=2)
    mixed = p_tuning_model(small_backbone("bert", dtype="mixed_bfloat16"), num_classes=3,
                           head="similarity", num_virtual_tokens=2, lora_rank=2)
    for mine, theirs in zip(mixed.weights, exact.weights, strict=True):
        mine.assign(np.asarray(theirs).astype(mine.dtype))
    x = [side(exact, *rows(1)), side(exact, *rows(2))]
    want = np.asarray(exact(x))
    for model in (mixed, merge_lora(mixed)):
        got = np.asarray(keras.ops.cast(model(x), "float32"))
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=5e-2)
