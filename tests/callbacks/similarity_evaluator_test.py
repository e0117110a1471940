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

pytestmark = pytest.mark.all_backends


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


def _reference(e1, e2, gold):
    cos = np.sum(e1 * e2, 1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
    return stats.spearmanr(cos, gold).statistic, stats.pearsonr(cos, gold).statistic


def test_each_distinct_input_is_encoded_once_strings_arrays_dicts():
    """SICK-style repeats: fewer inputs encoded, the same figures as encoding every side."""
    rng = np.random.default_rng(1)
    vocab = {f"sentence {i}": rng.normal(size=6) for i in range(12)}
    names = list(vocab)
    first = [names[i] for i in rng.integers(0, 6, 40)]  # 6 distinct on the left
    second = [names[i] for i in rng.integers(3, 12, 40)]  # overlapping on the right
    gold = rng.uniform(0, 5, 40)
    seen = []

    def encode(_, texts):
        seen.append(len(texts))
        return np.stack([vocab[t] for t in texts])

    evaluator = SimilarityEvaluator((first, second), gold, None, encode=encode)
    result = evaluator.evaluate()
    distinct = len(set(first) | set(second))
    assert seen == [distinct] and evaluator.num_distinct == distinct
    want = _reference(encode(None, first), encode(None, second), gold)
    np.testing.assert_allclose([result["sts_spearman"], result["sts_pearson"]], want, rtol=1e-12)
    assert result["sts_seconds"] > 0

    ids1 = rng.integers(0, 5, (40, 3))
    ids2 = np.concatenate([ids1[20:], rng.integers(0, 5, (20, 3))])  # repeats, never within a pair
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    for x1, x2 in ((ids1, ids2), ({"a": ids1, "b": ids1 * 2}, {"a": ids2, "b": ids2 * 2})):
        counted = []

        def run(m, x, counted=counted):
            x = x["a"] + x["b"] if isinstance(x, dict) else x
            counted.append(len(x))
            return m.predict(x.astype("float32"), verbose=0)

        got = SimilarityEvaluator((x1, x2), gold, model, encode=run).evaluate()
        rows = {r.tobytes() for r in np.concatenate([ids1, ids2])}
        assert counted == [len(rows)]
        kernel, bias = (np.asarray(w, "float64") for w in model.get_weights())
        scale = 3.0 if isinstance(x1, dict) else 1.0  # a + 2a
        a, b = (scale * ids @ kernel + bias for ids in (ids1, ids2))  # float64, exact ties
        np.testing.assert_allclose([got["sts_spearman"], got["sts_pearson"]], _reference(a, b, gold),
                                   rtol=1e-6)


def test_preprocessor_path_buckets_lengths_and_equals_full_length():
    """`preprocessor=`: encode_texts (sorted, trimmed batches) = the full-length encoding."""
    from keras_space.layers import MaskedMeanPooling

    length = 32
    words = {}

    def preprocess(texts):
        ids = np.zeros((len(texts), length), "int32")
        for i, t in enumerate(texts):
            toks = [words.setdefault(w, len(words) + 1) for w in t.split()][:length]
            ids[i, : len(toks)] = toks
        return {"token_ids": ids, "padding_mask": ids > 0}

    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="bool", name="padding_mask")
    pooled = MaskedMeanPooling()(keras.layers.Embedding(200, 8)(token_ids), padding_mask=mask)
    encoder = keras.Model({"token_ids": token_ids, "padding_mask": mask}, pooled)
    rng = np.random.default_rng(2)
    sentences = [" ".join(f"w{j}" for j in rng.integers(0, 150, rng.integers(1, 30))) for _ in range(30)]
    first = [sentences[i] for i in rng.integers(0, 30, 50)]
    second = [sentences[(j + 1 + k) % 30] for j, k in zip(rng.integers(0, 30, 50), rng.integers(0, 28, 50),
                                                          strict=True)]
    second = [b if b != a else sentences[0] for a, b in zip(first, second, strict=True)]
    gold = rng.uniform(0, 5, 50)
    got = SimilarityEvaluator((first, second), gold, encoder, preprocessor=preprocess).evaluate()
    table = np.asarray(next(w for w in encoder.weights if "embeddings" in w.path), "float64")
    full = [np.stack([table[preprocess([t])["token_ids"][0][: len(t.split())]].mean(0) for t in side])
            for side in (first, second)]  # float64 numpy mean of the real tokens
    np.testing.assert_allclose([got["sts_spearman"], got["sts_pearson"]], _reference(*full, gold),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="`encode` or `preprocessor`, not both"):
        SimilarityEvaluator((first, second), gold, encoder, encode=lambda m, x: x, preprocessor=preprocess)
