import keras
import numpy as np
import pytest
from scipy import stats

from keras_space.callbacks import SimilarityEvaluator, similarity_correlations
from keras_space.callbacks.similarity_evaluator import (
    _average_ranks,
    _pearson,
    _spearman,
)


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, size=200).astype(float)  # many ties, like STS scores
    b = a + rng.normal(size=200)
    np.testing.assert_allclose(_average_ranks(a), stats.rankdata(a))
    np.testing.assert_allclose(_spearman(a, b), stats.spearmanr(a, b).statistic, rtol=1e-12)
    np.testing.assert_allclose(_pearson(a, b), stats.pearsonr(a, b).statistic, rtol=1e-12)


def test_logs_spearman_each_epoch_against_numpy():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(64, 8)).astype("float32")
    x2 = (x1 + rng.normal(size=(64, 8))).astype("float32")
    gold = rng.uniform(0, 5, size=64)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model.compile("sgd", "mse")
    evaluator = SimilarityEvaluator((x1, x2), gold, model, name="dev")
    history = model.fit(x1, rng.normal(size=(64, 4)), epochs=2, verbose=0, callbacks=[evaluator])
    assert len(history.history["dev_spearman"]) == 2
    e1, e2 = model.predict(x1, verbose=0), model.predict(x2, verbose=0)
    cos = np.sum(e1 * e2, 1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    np.testing.assert_allclose(
        history.history["dev_spearman"][-1], stats.spearmanr(cos, gold).statistic, rtol=1e-5
    )
    np.testing.assert_allclose(
        history.history["dev_pearson"][-1], stats.pearsonr(cos, gold).statistic, rtol=1e-5
    )


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        SimilarityEvaluator((np.ones((5, 2)), np.ones((4, 2))), np.ones(5), lambda x: x)
    with pytest.raises(ValueError, match="NaN"):
        SimilarityEvaluator((np.ones((5, 2)), np.ones((5, 2))), [1, 2, np.nan, 3, 4], lambda x: x)
    with pytest.raises(ValueError, match="sentences1, sentences2"):
        SimilarityEvaluator(np.ones((5, 2)), np.ones(5), lambda x: x)


E = np.random.default_rng(1).normal(size=(6, 4))
GOLD = np.arange(6.0)


@pytest.mark.parametrize(
    "emb1, scores, match",
    [
        (np.where(np.arange(6)[:, None] == 2, np.nan, E), GOLD, "`emb1` has 1 rows with NaN or inf"),
        (np.where(np.arange(6)[:, None] < 2, 0.0, E), GOLD, "`emb1` has 2 all-zero rows"),
        (E, np.full(6, 3.0), "`scores` are all equal"),
        (E, np.r_[GOLD[:5], np.inf], "NaN or inf"),
        (E[:, 0], GOLD, r"must be \(n, dim\)"),
        (E, GOLD[:5], "same number of rows"),
    ],
)
def test_degenerate_inputs_are_refused(emb1, scores, match):
    with pytest.raises(ValueError, match=match):
        similarity_correlations(emb1, E, scores)


def test_constant_similarity_reports_zero_with_a_warning():
    with pytest.warns(UserWarning, match="collapsed encoder"):
        assert similarity_correlations(E, E, GOLD) == (0.0, 0.0)


def test_evaluator_refuses_constant_gold_scores():
    with pytest.raises(ValueError, match="all equal"):
        SimilarityEvaluator((E, E), np.ones(6), encoder=None)
