import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from keras_space.losses import InfoNCE

pytestmark = pytest.mark.all_backends  # also run by the JAX session (conftest.py)

RNG = np.random.default_rng(0)
A = RNG.normal(size=(6, 5))
P = A + 0.5 * RNG.normal(size=(6, 5))


def reference(a, p, temperature, symmetric, similarity, labels=None):
    if similarity == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
    logits = a @ p.T / temperature
    if labels is not None:
        mask = (labels[:, None] == labels[None, :]) & ~np.eye(len(a), dtype=bool)
        logits = np.where(mask, -np.inf, logits)
    rows = logsumexp(logits, axis=1) - np.diag(logits)
    if symmetric:
        rows = 0.5 * (rows + logsumexp(logits, axis=0) - np.diag(logits))
    return rows.mean()


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("temperature", [0.05, 1.0])
def test_matches_numpy(symmetric, similarity, temperature):
    loss = InfoNCE(temperature=temperature, symmetric=symmetric, similarity=similarity)
    got = float(loss(None, np.stack([A, P], 1).astype("float32")))
    # float32 logits of size ~1/temperature: ~1e-7 absolute rounding
    np.testing.assert_allclose(got, reference(A, P, temperature, symmetric, similarity), rtol=1e-5, atol=1e-6)


def test_duplicate_label_masking():
    labels = np.array([0, 1, 0, 2, 1, 3])
    y = np.stack([A, P], 1).astype("float32")
    got = float(InfoNCE(0.1, symmetric=True, mask_duplicates=True)(labels, y))
    np.testing.assert_allclose(got, reference(A, P, 0.1, True, "cosine", labels), rtol=1e-5)
    # without the flag, targets are ignored
    ignored = float(InfoNCE(0.1, symmetric=True)(np.zeros(6), y))
    np.testing.assert_allclose(ignored, reference(A, P, 0.1, True, "cosine"), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the labels"):
        InfoNCE(mask_duplicates=True)(None, y)


def mnrl_reference(a, candidates, scale, weights=None):
    """sentence-transformers' MultipleNegativesRankingLoss: anchors against the concatenated
    positives and negatives, cross-entropy with target i."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    logits = a @ c.T * scale
    rows = logsumexp(logits, axis=1) - logits[np.arange(len(a)), np.arange(len(a))]
    return np.mean(rows if weights is None else weights * rows)


def test_hard_negatives_weights_and_a_given_logit_scale_match_numpy():
    n1, n2 = RNG.normal(size=(6, 5)), A + RNG.normal(size=(6, 5))
    y = np.stack([A, P, n1, n2], axis=1)                  # float64 in, float64 out
    got = InfoNCE(0.05)(None, y)
    assert got.dtype == "float64"
    np.testing.assert_allclose(float(got), mnrl_reference(A, np.concatenate([P, n1, n2]), 20.0), rtol=1e-13)
    w = RNG.uniform(size=6)
    weighted = InfoNCE(0.05)(None, y, sample_weight=w)
    np.testing.assert_allclose(float(weighted), mnrl_reference(A, np.concatenate([P, n1, n2]), 20.0, w), rtol=1e-13)
    learned = InfoNCE(0.05, learnable_temperature=True)(None, y, logit_scale=np.float64(7.5))
    np.testing.assert_allclose(float(learned), mnrl_reference(A, np.concatenate([P, n1, n2]), 7.5), rtol=1e-13)
    # labels mask other tuples' positives only; the hard negatives stay
    labels = np.array([0, 1, 0, 2, 1, 3])
    masked = float(InfoNCE(0.05, mask_duplicates=True)(labels, y[:, :2]))
    np.testing.assert_allclose(masked, reference(A, P, 0.05, False, "cosine", labels), rtol=1e-12)


def test_float16_inputs_and_config():
    loss = InfoNCE(0.05, symmetric=True)
    y = np.stack([A, P], 1).astype("float16")
    assert np.isfinite(float(loss(None, y)))
    revived = InfoNCE.from_config(InfoNCE(0.07, learnable_temperature=True, max_logit_scale=50.0).get_config())
    assert revived.learnable_temperature and revived.max_logit_scale == 50.0
    revived = InfoNCE.from_config(loss.get_config())
    assert revived.get_config() == loss.get_config()
    assert keras.saving.get_registered_name(InfoNCE) == "keras_space>InfoNCE"


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature=0"):
        InfoNCE(temperature=0)
    with pytest.raises(ValueError, match="similarity='l2'"):
        InfoNCE(similarity="l2")
    with pytest.raises(ValueError, match=r"\(batch, 2 \+ hard negatives, dim\)"):
        InfoNCE()(None, A.astype("float32"))
