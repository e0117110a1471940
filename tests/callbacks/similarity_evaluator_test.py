import keras
import numpy as np
import pytest
from scipy import stats

from keras_space.callbacks import SimilarityEvaluator
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
