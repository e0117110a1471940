"""PTuningCausalLM: a prompted GPT-2 that generates text (issue 35, item 2).

References: the logits against keras-hub's layers run one by one with the prompt
written in by hand (tests/models/p_tuning_deep_test.py's `hand_states`); greedy
generation with the key/value cache against greedy decoding that recomputes the whole
prompted sequence at every step; and a frozen GPT-2 that learns a continuation through
its prompt alone.
"""

import keras
import keras_hub
import numpy as np
import pytest

from keras_space.models import PTuningCausalLM, freeze_prompts
from tests.backend import BACKEND
from tests.models.p_tuning_backbones_test import (
    prefixed,
    randomise_prompts,
    rows,
    small_backbone,
)
from tests.models.p_tuning_deep_test import hand_states

pytestmark = pytest.mark.all_backends

TEXTS = {"token_ids": np.array([[5, 6, 7, 0], [8, 9, 0, 0], [10, 0, 0, 0]], "int32"),
         "padding_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], "int32")}


def randomise(lm, seed):
    """Every prompt weight random; each layer call's prompt (None past the first when shallow)."""
    tables = randomise_prompts(lm, seed, scale=0.5)
    return tables + [None] * (len(lm.backbone.transformer_layers) - len(tables))


@pytest.mark.parametrize("depth", ["shallow", "deep"])
def test_logits_equal_keras_hub_layers_run_by_hand(depth):
    """float64 (1e-10; on JAX, left padding to float32 rounding: Keras's attention runs
    in float32 there, see p_tuning_deep_test), garbage at padded positions."""
    backbone = small_backbone("gpt2", dtype="float64")
    n = 3
    lm = PTuningCausalLM(backbone, num_virtual_tokens=n, depth=depth)
    prompts = randomise(lm, seed=1)

    def at_the_prefix(states, prompt):
        if prompt is not None:
            states[:, :n] = prompt

    clean_ids, clean_mask = rows(0, garbage=False)
    ref_ids, ref_mask = prefixed(clean_ids, clean_mask, n)
    states = hand_states(backbone, prompts, ref_ids, ref_mask, at_the_prefix)[:, n:]
    want = states @ np.asarray(backbone.token_embedding.embeddings).T
    for left in (False, True):
        ids, mask = rows(0, left=left)
        got = np.asarray(lm({"token_ids": ids, "padding_mask": mask}))
        assert got.shape == ids.shape + (64,)
        for i in range(len(ids)):
            real = np.flatnonzero(mask[i])
            atol = 2e-5 if left and BACKEND == "jax" else 1e-10
            np.testing.assert_allclose(got[i, real], want[i, : len(real)], rtol=0, atol=atol,
                                       err_msg=f"left={left}")


@pytest.mark.parametrize("depth", ["shallow", "deep"])
def test_greedy_generation_with_the_cache_equals_recomputing_every_step(depth, monkeypatch):
    """Token for token; rows of different lengths; the prompt is computed once per call."""
    lm = PTuningCausalLM(small_backbone("gpt2"), num_virtual_tokens=3, depth=depth)
    randomise(lm, seed=2)
    calls = []
    for prompt in lm.prompts:
        original = prompt.prompt_embeddings
        monkeypatch.setattr(prompt, "prompt_embeddings",
                            lambda training=None, f=original: calls.append(1) or f(training))
    out = lm.generate(TEXTS, max_length=9)
    assert len(calls) == len(lm.prompts)  # once each, not once per token
    monkeypatch.undo()
    # the whole prompted sequences again, every step (padded to one length: one compile on JAX)
    seqs = [list(ids[m == 1]) for ids, m in zip(TEXTS["token_ids"], TEXTS["padding_mask"], strict=True)]
    while min(map(len, seqs)) < 9:
        ids = np.array([s + [0] * (9 - len(s)) for s in seqs], "int32")
        mask = np.array([[1] * len(s) + [0] * (9 - len(s)) for s in seqs], "int32")
        logits = np.asarray(lm({"token_ids": ids, "padding_mask": mask}))
        for row, s in enumerate(seqs):
            if len(s) < 9:
                s.append(int(logits[row, len(s) - 1].argmax()))
    assert out["token_ids"].tolist() == seqs
    np.testing.assert_array_equal(out["padding_mask"], np.ones((3, 9), bool))
    # a stop token ends a row's mask after it (not in the text)
    stop = int(out["token_ids"][0, 4])
    stopped = lm.generate(TEXTS, max_length=9, stop_token_ids=[stop])
    first = 4 if stop not in out["token_ids"][0, 3:4] else 3
    assert stopped["padding_mask"][0].tolist() == [True] * (first + 1) + [False] * (8 - first)


def test_seeded_sampling_repeats():
    lm = PTuningCausalLM(small_backbone("gpt2"), num_virtual_tokens=2)
    randomise(lm, seed=3)
    draws = [lm.generate(TEXTS, max_length=12, sampler=keras_hub.samplers.TopKSampler(k=20, seed=7))
             for _ in range(2)]
    np.testing.assert_array_equal(draws[0]["token_ids"], draws[1]["token_ids"])


@pytest.mark.slow
def test_a_prompt_alone_teaches_a_frozen_gpt2_to_continue_a_pattern():
    """After 3 4 5 the random GPT-2 does not say 6 7 8; trained on that one sequence
    through its prompt (causal-LM loss on the continuation), it does, and every
    backbone weight is bit-identical. (The GPT-2 has kernels of scale 0.3 and a token
    table of scale 1: at keras-hub's initial 0.02 every logit is about 0.1 and nothing,
    prompt or not, moves them.)"""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=20, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=32, dropout=0.0)
    rng = np.random.default_rng(1)
    for w in backbone.weights:
        if "kernel" in w.path or "embeddings" in w.path:
            w.assign(rng.normal(0, 1.0 if "token_embedding" in w.path else 0.3, w.shape).astype("float32"))
    frozen = [np.array(w) for w in backbone.weights]
    lm = PTuningCausalLM(backbone, num_virtual_tokens=4)
    text = {"token_ids": np.array([[3, 4, 5]], "int32"), "padding_mask": np.ones((1, 3), "int32")}
    pattern = [3, 4, 5, 6, 7, 8]
    assert lm.generate(text, max_length=6)["token_ids"][0].tolist() != pattern
    x = {"token_ids": np.array([pattern[:-1]] * 8, "int32"), "padding_mask": np.ones((8, 5), "int32")}
    y = np.array([pattern[1:]] * 8, "int32")
    weights = np.array([[0, 0, 1, 1, 1]] * 8, "float32")  # the continuation only
    lm.compile(keras.optimizers.Adam(3e-2),
               keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    lm.fit(x, y, sample_weight=weights, epochs=150, batch_size=8, verbose=0)
    assert lm.generate(text, max_length=6)["token_ids"][0].tolist() == pattern
    for before, after in zip(frozen, backbone.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(after), before)


def test_reload_and_freeze_prompts_keep_the_prompt_and_the_backbone_frozen(tmp_path):
    lm = PTuningCausalLM(small_backbone("gpt2"), num_virtual_tokens=2, depth="deep",
                         anchor_token_ids=np.array([5, 6]))  # numpy ids are accepted
    randomise(lm, seed=4)
    before = np.asarray(lm(TEXTS))
    path = str(tmp_path / "lm.keras")
    lm.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(loaded(TEXTS)), before)
    trainable = [w.path for w in lm.trainable_weights]
    assert trainable and all(p.startswith("prompt_encoder") for p in trainable)
    assert [w.path for w in loaded.trainable_weights] == trainable
    generated = lm.generate(TEXTS, max_length=8)["token_ids"]
    np.testing.assert_array_equal(loaded.generate(TEXTS, max_length=8)["token_ids"], generated)
    # freeze_prompts: plain tables, bit-identical logits, the same tokens, nothing trainable
    frozen = freeze_prompts(lm)
    assert isinstance(frozen, PTuningCausalLM) and not frozen.trainable_weights
    assert all(p.encoder == "none" for p in frozen.prompts)
    np.testing.assert_array_equal(np.asarray(frozen(TEXTS)), before)
    np.testing.assert_array_equal(frozen.generate(TEXTS, max_length=8)["token_ids"], generated)


def test_bad_inputs_are_refused_naming_them():
    lm = PTuningCausalLM(small_backbone("gpt2"), num_virtual_tokens=3)  # 32 positions
    with pytest.raises(ValueError, match=r"max_length.*29.*Received: max_length=30"):
        lm.generate(TEXTS, max_length=30)  # 3 virtual + 30 > 32
    with pytest.raises(ValueError, match="max_length"):
        lm.generate(TEXTS, max_length=2)  # shorter than the texts
    with pytest.raises(ValueError, match="padded on the right"):
        lm.generate({"token_ids": TEXTS["token_ids"], "padding_mask": TEXTS["padding_mask"][:, ::-1]})
    with pytest.raises(ValueError, match="at least one real token"):
        lm.generate({"token_ids": TEXTS["token_ids"], "padding_mask": np.zeros((3, 4), "int32")})
    with pytest.raises(ValueError, match="token_ids"):
        lm.generate({"token_ids": TEXTS["token_ids"] + 60, "padding_mask": TEXTS["padding_mask"]})
    wide = PTuningCausalLM(small_backbone("gpt2", dtype="float64"), num_virtual_tokens=2)
    if BACKEND == "jax":  # the session runs in x64 mode; keras-hub's samplers need 32-bit
        with pytest.raises(ValueError, match="float64 model cannot generate on JAX"):
            wide.generate(TEXTS, max_length=6)
    else:
        assert wide.generate(TEXTS, max_length=6)["token_ids"].shape == (3, 6)
    with pytest.raises(ValueError, match=r"supported: .*Received: backbone=Sequential"):
        PTuningCausalLM(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match=r"causal.*BertBackbone"):
        PTuningCausalLM(small_backbone("bert"))
    with pytest.raises(ValueError, match="depth"):
        PTuningCausalLM(small_backbone("gpt2"), depth="wide")
