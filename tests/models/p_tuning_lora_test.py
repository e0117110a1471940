"""LoRA beside prompts: `p_tuning_model(..., lora_rank=r)` and `merge_lora`.

The reference for the forward pass is keras-hub's own, as in the prompt tests
(p_tuning_backbones_test, p_tuning_deep_test), on a plain copy of the backbone
whose query and value kernels are merged in numpy, W + A B (keras-hub's alpha is
the rank): float32 throughout (Keras keeps LoRA factors in float32 whatever the
model's dtype), so 2e-5 as the other float32 prompt tests. The optimizer tests
compare with plain SGD steps on the full batch: one step's update is lr times the
gradient, so the accumulated, rate-scaled updates agree to float32 rounding of the
sums of per-example gradients (1e-5 of each variable's largest update: a few float32
ulps, summed over a batch of 4 in another order), read as the difference of the
weights, which are exact to an ulp of the weights.
"""

import keras
import numpy as np
import pytest

from keras_space.models import (
    PTuningCausalLM,
    freeze_prompts,
    merge_lora,
    p_tuning_model,
)
from keras_space.models._lora import lora_layers
from keras_space.optimizers import GradientAccumulator, LayerwiseLearningRate
from tests.backend import BACKEND
from tests.models.p_tuning_backbones_test import (
    FAMILIES,
    LABELS,
    causal_head,
    inputs_for,
    mean_head,
    prefixed,
    randomise_prompts,
    reference_states,
    rows,
    small_backbone,
)
from tests.models.p_tuning_deep_test import hand_states

pytestmark = pytest.mark.all_backends

RANK = 2


def lora_model(kind, depth="shallow", **kwargs):
    backbone = small_backbone(kind)
    if kind == "gpt2":
        head = dict(head="causal_lm", label_token_ids=LABELS)
    else:
        head = dict(num_classes=2)
    model = p_tuning_model(backbone, num_virtual_tokens=3, depth=depth, lora_rank=RANK, **head, **kwargs)
    return backbone, model


def randomise_factors(model, seed):
    """Both factors random (B starts at zero, which would hide A and the update)."""
    rng = np.random.default_rng(seed)
    for layer in lora_layers(model):
        for factor in (layer.lora_kernel_a, layer.lora_kernel_b):
            factor.assign(rng.normal(0, 0.3, factor.shape).astype("float32"))


def numpy_merged(backbone):
    """A plain copy of the LoRA backbone, each LoRA kernel set to W + A B in numpy."""
    copy = type(backbone).from_config(backbone.get_config())
    merged = {}
    for layer in lora_layers(backbone):
        a, b = np.asarray(layer.lora_kernel_a), np.asarray(layer.lora_kernel_b)
        update = (layer.lora_alpha / layer.lora_rank) * np.tensordot(a, b, axes=1)
        merged[layer.path] = np.asarray(layer._kernel) + update
    source = [w for w in backbone.weights if w.name not in ("lora_kernel_a", "lora_kernel_b")]
    used = set()
    for target, w in zip(copy.weights, source, strict=True):
        layer_path = w.path.rsplit("/", 1)[0]
        if w.name == "kernel" and layer_path in merged:
            target.assign(merged[layer_path])
            used.add(layer_path)
        else:
            target.assign(np.asarray(w))
    assert used == merged.keys() and len(used) >= 4  # query and value of every layer
    return copy


@pytest.mark.parametrize("kind", FAMILIES)
def test_lora_and_prompt_equal_keras_hub_with_merged_kernels(kind):
    """Prefix prompt + LoRA on every family: keras-hub's forward on the merged copy, the
    spliced sequence, garbage at padded positions, right and left padding."""
    backbone, model = lora_model(kind)
    (prompt,) = randomise_prompts(model, seed=1)
    randomise_factors(model, seed=2)
    n = 3
    clean_ids, clean_mask = rows(0, garbage=False)
    ref_ids, ref_mask = prefixed(clean_ids, clean_mask, n)
    reference = numpy_merged(backbone)
    states = reference_states(reference, prompt, ref_ids, ref_mask)
    if kind == "gpt2":
        want = causal_head(backbone, states, ref_mask.sum(1) - 1)
    else:
        want = mean_head(model, states[:, n:], clean_mask)
    for left in (False, True):
        got = np.asarray(model(inputs_for(model, *rows(0, left=left))))
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"left={left}")
    # the update matters: the backbone's own kernels give other logits
    plain = reference_states(type(backbone).from_config(backbone.get_config()), prompt, ref_ids, ref_mask)
    assert np.abs(plain - states).max() > 1e-2
    # merge_lora (Keras's own kernel arithmetic) gives the same logits, without LoRA layers
    merged = merge_lora(model)
    assert not lora_layers(merged) and len(merged.weights) == len(model.weights) - 2 * len(lora_layers(model))
    np.testing.assert_allclose(np.asarray(merged(inputs_for(model, *rows(0)))), want, atol=2e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_deep_prompts_with_lora_equal_the_layers_run_by_hand(kind):
    backbone, model = lora_model(kind, depth="deep")
    prompts = randomise_prompts(model, seed=3)
    randomise_factors(model, seed=4)
    n = 3

    def at_the_prefix(states, prompt):
        states[:, :n] = prompt

    clean_ids, clean_mask = rows(5, garbage=False)
    ref_ids, ref_mask = prefixed(clean_ids, clean_mask, n)
    states = hand_states(numpy_merged(backbone), prompts, ref_ids, ref_mask, at_the_prefix)
    if kind == "gpt2":
        want = causal_head(backbone, states, ref_mask.sum(1) - 1)
    else:
        want = mean_head(model, states[:, n:], clean_mask)
    got = np.asarray(model(inputs_for(model, *rows(5, left=True))))
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_only_prompt_lora_factors_and_head_train_and_the_rest_stays_bit_identical():
    """AdamW with weight decay; the projections' biases stay frozen too (keras-hub's
    enable_lora leaves them trainable; LoRA trains the factors only)."""
    backbone, model = lora_model("bert")
    trainable = {w.path for w in model.trainable_weights}
    factors = {w.path for w in model.trainable_weights if w.name.startswith("lora_kernel_")}
    assert len(factors) == 8  # 2 layers x (query, value) x (A, B)
    assert trainable - factors == {w.path for w in model.trainable_weights
                                   if w.path.startswith(("prompt_encoder/", "classifier/"))}
    frozen = {w.path: np.asarray(w).copy() for w in model.weights if w.path not in trainable}
    x, y = inputs_for(model, *rows(6)), np.array([0, 1, 1])
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, verbose=0)
    for w in model.weights:
        if w.path in frozen:
            np.testing.assert_array_equal(np.asarray(w), frozen[w.path], err_msg=w.path)
    assert all(np.abs(np.asarray(w)).max() > 0 for w in model.weights if w.name == "lora_kernel_b")


def sgd_step_updates(model, x, y, optimizer, batch_size):
    """{path: (update, largest |weight|)} of the trainable weights after one epoch, unshuffled."""
    before = {w.path: np.asarray(w).copy() for w in model.trainable_weights}
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return {w.path: (np.asarray(w) - before[w.path], np.abs(before[w.path]).max())
            for w in model.trainable_weights}


def test_lora_rate_of_its_own_and_accumulation_equal_one_large_batch_step(tmp_path):
    """GradientAccumulator(LayerwiseLearningRate(SGD, LoRA factors x 0.25), 2) over two
    micro-batches = one plain SGD step on the whole batch, the factors' update scaled by
    0.25; saved mid-window and reloaded, the run goes on to the same weights."""
    def fresh():
        keras.utils.set_random_seed(11)
        _, model = lora_model("bert")
        randomise_prompts(model, seed=5)
        randomise_factors(model, seed=6)
        return model

    x, y = inputs_for(fresh(), *rows(7)), np.array([0, 1, 1])
    x = {k: np.concatenate([v, v[:1]]) for k, v in x.items()}  # 4 rows: two micro-batches of 2
    y = np.concatenate([y, y[:1]])
    full = sgd_step_updates(fresh(), x, y, keras.optimizers.SGD(1.0), batch_size=4)

    def wrapped():
        inner = LayerwiseLearningRate(keras.optimizers.SGD(1.0), {r".*lora_kernel_[ab]": 0.25})
        return GradientAccumulator(inner, steps=2)

    got = sgd_step_updates(fresh(), x, y, wrapped(), batch_size=2)
    assert got.keys() == full.keys()
    eps = np.finfo("float32").eps
    for path, (update, size) in full.items():
        factor = 0.25 if "lora_kernel" in path else 1.0
        scale = np.abs(update).max()
        assert scale > 1e-6, path  # every group moves
        # an update read as new - old weights is exact to an ulp of the weights (twice:
        # two runs); the updates themselves agree to 1e-5 of the largest (module docstring)
        np.testing.assert_allclose(got[path][0], factor * update, rtol=0,
                                   atol=2 * eps * size + 1e-5 * scale, err_msg=path)

    # resume mid-window: one micro-batch, save, reload, the other micro-batch
    model = fresh()
    model.compile(wrapped(), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first = {k: v[:2] for k, v in x.items()}
    model.fit(first, y[:2], batch_size=2, epochs=1, verbose=0)
    model.save(tmp_path / "mid.keras")
    resumed = keras.saving.load_model(tmp_path / "mid.keras")
    assert [w.path for w in resumed.trainable_weights] == [w.path for w in model.trainable_weights]
    for a, b in zip(resumed.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    for a, b in zip(resumed.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    second = {k: v[2:] for k, v in x.items()}
    for m in (model, resumed):
        m.fit(second, y[2:], batch_size=2, epochs=1, verbose=0)
    # the serving forms of a model compiled with the wrapped optimizer (a clone of a
    # compiled model once took its optimizer's config, which the wrapper refused)
    np.testing.assert_array_equal(np.asarray(freeze_prompts(model)(x)), np.asarray(model(x)))
    np.testing.assert_allclose(np.asarray(merge_lora(model)(x)), np.asarray(model(x)), atol=2e-6)
    for a, b in zip(resumed.weights, model.weights, strict=True):
        # TensorFlow: bit for bit; JAX recompiles the step on the reloaded model and XLA's
        # fusion moves the last bit of float32 updates (also without LoRA)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0,
                                   atol=0 if BACKEND == "tensorflow" else 1e-7, err_msg=a.path)


@pytest.mark.parametrize("kind", ["albert", "gpt2"])  # ALBERT: LoRA on shared layers
def test_keras_reload_keeps_factors_kernels_and_what_is_frozen(kind, tmp_path):
    """Keras alone would save W + A B as the kernel and lose the factors."""
    backbone, model = lora_model(kind)
    randomise_prompts(model, seed=8)
    randomise_factors(model, seed=9)
    x = inputs_for(model, *rows(10))
    before = np.asarray(model(x))
    model.save(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras")
    assert [layer.path for layer in lora_layers(loaded)] == [layer.path for layer in lora_layers(model)]
    assert [w.path for w in loaded.trainable_weights] == [w.path for w in model.trainable_weights]
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)
    # the same through save_weights / load_weights into a new model
    model.save_weights(tmp_path / "lora.weights.h5")
    _, other = lora_model(kind)
    other.load_weights(tmp_path / "lora.weights.h5")
    np.testing.assert_array_equal(np.asarray(other(x)), before)
    # freeze_prompts keeps the LoRA layers (shared); merging it serves the same logits
    served = freeze_prompts(model)
    assert len(lora_layers(served)) == len(lora_layers(model))
    np.testing.assert_array_equal(np.asarray(served(x)), before)
    merged = merge_lora(served)
    np.testing.assert_allclose(np.asarray(merged(x)), before, atol=2e-6)
    merged.save(tmp_path / "merged.keras")
    np.testing.assert_array_equal(np.asarray(keras.saving.load_model(tmp_path / "merged.keras")(x)),
                                  np.asarray(merged(x)))
    with pytest.raises(ValueError, match="no LoRA layers to merge .*merged already"):
        merge_lora(merged)


def test_lora_refusals():
    for rank in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="lora_rank"):
            p_tuning_model(small_backbone("bert"), num_classes=2, lora_rank=rank)
    with pytest.raises(ValueError, match="train_backbone=True"):
        p_tuning_model(small_backbone("bert"), num_classes=2, lora_rank=2, train_backbone=True)
    backbone = small_backbone("bert")
    backbone.enable_lora(2)
    with pytest.raises(ValueError, match="must not have LoRA enabled already .*pass lora_rank"):
        p_tuning_model(backbone, num_classes=2)
    gpt2 = small_backbone("gpt2")
    gpt2.enable_lora(2)
    with pytest.raises(ValueError, match="must not have LoRA enabled already .*trains its prompts only"):
        PTuningCausalLM(gpt2)
    with pytest.raises(ValueError, match="no LoRA layers to merge"):
        merge_lora(p_tuning_model(small_backbone("bert"), num_classes=2))
    with pytest.raises(ValueError, match="must be a keras.Model"):
        merge_lora("model.keras")
