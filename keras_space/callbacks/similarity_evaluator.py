"""SimilarityEvaluator: STS-style Spearman/Pearson of cosine similarity, per epoch."""

import time
import warnings

import keras
import numpy as np

from keras_space.api_export import keras_space_export
from keras_space.utils import validation


def _cosine_similarity_rows(a, b):
    """Row-wise cosine of two (n, d) arrays, float64, zero rows give 0."""
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-300)


def _average_ranks(x):
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype="float64")
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size, dtype="float64")
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _pearson(a, b):
    """Pearson correlation; 0.0 (with a warning) when either side is constant."""
    a = np.asarray(a, dtype="float64") - np.mean(a)
    b = np.asarray(b, dtype="float64") - np.mean(b)
    denominator = np.sqrt(np.sum(a * a) * np.sum(b * b))
    if denominator == 0.0:
        warnings.warn(
            "Correlation of a constant: every cosine similarity is the same (a collapsed "
            "encoder?); reporting 0.0.",
            stacklevel=3,
        )
        return 0.0
    return float(np.sum(a * b) / denominator)


def _check_scores(scores):
    scores = np.asarray(scores, dtype="float64")
    if not np.all(np.isfinite(scores)):
        raise ValueError("`scores` contains NaN or inf (unscored pairs?); drop them first.")
    if scores.size and np.all(scores == scores[0]):
        raise ValueError(
            "`scores` are all equal: a correlation with them is undefined. "
            f"Received: scores={scores[:5].tolist()}..."
        )
    return scores


def _check_embeddings(name, emb):
    emb = np.asarray(emb, dtype="float64")
    if emb.ndim != 2:
        raise ValueError(f"`{name}` must be (n, dim). Received: shape {emb.shape}")
    bad = int(np.sum(~np.all(np.isfinite(emb), axis=1)))
    if bad:
        raise ValueError(f"`{name}` has {bad} rows with NaN or inf: the encoder diverged.")
    zero = int(np.sum(~np.any(emb != 0, axis=1)))
    if zero:
        raise ValueError(f"`{name}` has {zero} all-zero rows: their cosine similarity is undefined.")
    return emb


def _spearman(a, b):
    return _pearson(_average_ranks(a), _average_ranks(b))


@keras_space_export("keras_space.callbacks.similarity_correlations", serializable=False)
def similarity_correlations(emb1, emb2, scores):
    """Spearman and Pearson correlation of row-wise cosine similarity with gold scores.

    The statistic `SimilarityEvaluator` logs, for embeddings you already have
    (computed in float64; ties get average ranks, as `scipy.stats.spearmanr`).

    Args:
        emb1: (n, dim) array, the first sentence of each pair.
        emb2: (n, dim) array, the second sentence of each pair.
        scores: (n,) gold similarity scores.

    Raises:
        ValueError: NaN/inf or all-zero embedding rows (naming how many), and
            constant or non-finite scores. A constant similarity (a collapsed
            encoder) gives 0.0 with a warning.

    Returns:
        A `(spearman, pearson)` tuple of floats.

    Example:

    ```python
    import numpy as np
    from keras_space.callbacks import similarity_correlations

    a, b = np.random.rand(10, 8), np.random.rand(10, 8)
    spearman, pearson = similarity_correlations(a, b, np.arange(10.0))
    ```
    """
    scores = _check_scores(scores)
    cos = _cosine_similarity_rows(_check_embeddings("emb1", emb1), _check_embeddings("emb2", emb2))
    if cos.shape != scores.shape:
        raise ValueError(
            f"`emb1`, `emb2` and `scores` must have the same number of rows. Received "
            f"{len(cos)} pairs and {len(scores)} scores"
        )
    if np.ptp(cos) <= 1e-12:  # equal up to rounding: ranks of rounding noise mean nothing
        return _pearson(np.zeros_like(cos), scores), 0.0
    return _spearman(cos, scores), _pearson(cos, scores)


@keras_space_export("keras_space.callbacks.SimilarityEvaluator")
class SimilarityEvaluator(keras.callbacks.Callback):
    """Log Spearman and Pearson correlations of cosine similarity on sentence pairs.

    At the end of each epoch (and with `evaluate()` at any time) it embeds
    both sides of every pair with `encoder`, takes the cosine of each pair,
    and correlates it with the gold scores, as the STS benchmarks do. The
    figures go into the epoch's `logs` (so `History`, `EarlyStopping` and
    `ModelCheckpoint` can use them) as `{name}_spearman` and `{name}_pearson`.

    Each distinct input is encoded once per evaluation: SICK-style data
    repeats sentences across pairs (SICK_train: 9,000 sides, 4,802 distinct), and
    encoding every side anew would pay for the repeats. With `preprocessor=`
    (strings in), sentences are sorted by length and each batch trimmed to its
    longest (`keras_space.models.encode_texts`), so short sentences do not pay
    for the preprocessor's full length. The evaluation's wall time is logged
    too, as `{name}_seconds`.

    Args:
        pairs: (sentences1, sentences2): two equal-length sequences of inputs
            the encoder takes (strings when `encode` or `preprocessor` handles
            text, or arrays/dicts of token ids).
        scores: gold similarity scores, one per pair.
        encoder: a Keras model mapping inputs to sentence vectors, or any
            callable `encode(inputs) -> (n, d) array`.
        encode: optional function `(encoder, inputs) -> (n, d) array`; the
            default is `encoder.predict(inputs)`.
        preprocessor: optional keras-hub preprocessor for string pairs: the
            sentences are encoded with `encode_texts(encoder, preprocessor, ...)`
            (length-bucketed; the encoder must be padding-aware, as
            `sentence_encoder` models are). Not together with `encode`.
            Defaults to `None`.
        name: prefix of the logged keys. Defaults to `"sts"`.
        verbose: print the figures after each epoch. Defaults to `0`.

    Example:

    ```python fixture:minilm fixture:sts_dir
    import keras_hub
    from keras_space.callbacks import SimilarityEvaluator
    from keras_space.datasets import load_sts
    from keras_space.models import sentence_encoder
    from keras_space.utils import minilm_path

    s1, s2, gold = load_sts("../shared/data/sts/2012/MSRpar.test.tsv")
    s1, s2, gold = s1[:64], s2[:64], gold[:64]  # a quick look; the whole file in practice
    backbone = keras_hub.models.BertBackbone.from_preset(minilm_path())
    pre = keras_hub.models.BertTextClassifierPreprocessor.from_preset(minilm_path())
    encoder = sentence_encoder(backbone, pooling="mean")
    evaluator = SimilarityEvaluator((s1, s2), gold, encoder, preprocessor=pre)
    print(evaluator.evaluate())  # {"sts_spearman": ..., "sts_pearson": ..., "sts_seconds": ...}
    ```
    """

    def __init__(self, pairs, scores, encoder, encode=None, name="sts", verbose=0, preprocessor=None):
        super().__init__()
        if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
            raise ValueError(
                "`pairs` must be a (sentences1, sentences2) tuple. Received: "
                f"{type(pairs).__name__} of length {len(pairs) if hasattr(pairs, '__len__') else '?'}"
            )
        self.first, self.second = pairs
        try:
            self.scores = np.asarray(scores, dtype="float64")
        except (TypeError, ValueError):
            raise validation.ArgumentTypeError(
                f"`scores` must be numbers (gold similarity scores). Received: scores={scores!r}"
            ) from None
        n1, n2 = _length(self.first), _length(self.second)
        if not n1 == n2 == len(self.scores):
            raise ValueError(
                f"`pairs` and `scores` must have the same length. Received {n1}, {n2} and {len(self.scores)}"
            )
        if len(self.scores) < 3:
            raise ValueError(f"At least 3 scored pairs are needed. Received {len(self.scores)}")
        _check_scores(self.scores)
        if encode is not None and preprocessor is not None:
            raise ValueError(
                "Pass `encode` or `preprocessor`, not both (`preprocessor` means "
                f"encode_texts(encoder, preprocessor, ...)). Received: encode={encode!r}, "
                f"preprocessor={type(preprocessor).__name__}"
            )
        if preprocessor is not None:
            from keras_space.models.sentence_encoder import encode_texts

            def encode(model, texts):
                return encode_texts(model, preprocessor, texts)

        self.encoder = encoder
        self.encode = encode
        self.name = name
        self.verbose = validation.non_negative_int("verbose", verbose)
        self.history = []
        self._distinct = _distinct_rows(self.first, self.second)

    def _embed(self, inputs):
        if self.encode is not None:
            return np.asarray(self.encode(self.encoder, inputs))
        if hasattr(self.encoder, "predict"):
            return np.asarray(self.encoder.predict(inputs, verbose=0))
        return np.asarray(self.encoder(inputs))

    @property
    def num_distinct(self):
        """How many distinct inputs one evaluation encodes (both sides together)."""
        if self._distinct is None:
            return 2 * len(self.scores)
        return sum(len(rows) for rows in self._distinct[0])

    def evaluate(self):
        """Spearman and Pearson now, as a dict."""
        start = time.perf_counter()
        if self._distinct is None:  # inputs without a way to compare them: every side anew
            emb1, emb2 = self._embed(self.first), self._embed(self.second)
        else:
            (rows1, rows2), inverse = self._distinct
            emb = self._embed(_concat(_take(self.first, rows1), _take(self.second, rows2)))
            n = len(self.scores)
            if len(emb) != len(rows1) + len(rows2):
                raise ValueError(
                    f"The encoder returned {len(emb)} vectors for {len(rows1) + len(rows2)} inputs."
                )
            emb1, emb2 = emb[inverse[:n]], emb[inverse[n:]]
        spearman, pearson = similarity_correlations(emb1, emb2, self.scores)
        return {
            f"{self.name}_spearman": spearman,
            f"{self.name}_pearson": pearson,
            f"{self.name}_seconds": time.perf_counter() - start,
        }

    def on_epoch_end(self, epoch, logs=None):
        result = self.evaluate()
        self.history.append(result)
        if logs is not None:
            logs.update(result)
        if self.verbose:
            print(f"epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))


def _row_keys(x):
    """A hashable key per input row (strings, arrays, dicts of arrays), or None."""
    if isinstance(x, dict):
        columns = [np.asarray(x[k]) for k in sorted(x)]
        return [tuple(c[i].tobytes() for c in columns) for i in range(len(columns[0]))]
    if isinstance(x, (list, tuple)) and all(isinstance(t, (str, bytes)) for t in x):
        return list(x)
    if isinstance(x, np.ndarray) or hasattr(x, "numpy"):
        x = np.asarray(x)
        return [row.tobytes() for row in x]
    return None


def _distinct_rows(first, second):
    """((rows of `first`, rows of `second`) to encode, inverse) or None.

    `inverse[i]` (i < n: first side, else second) is the position of input i's
    vector among the encoded ones (the `first` rows, then the `second` rows).
    """
    if type(first) is not type(second) and not (
        isinstance(first, (list, tuple)) and isinstance(second, (list, tuple))
    ):
        return None
    if isinstance(first, dict):
        if sorted(first) != sorted(second) or any(
            np.shape(first[k])[1:] != np.shape(second[k])[1:] for k in first
        ):
            return None
    elif not isinstance(first, (list, tuple)) and np.shape(first)[1:] != np.shape(second)[1:]:
        return None
    keys1, keys2 = _row_keys(first), _row_keys(second)
    if keys1 is None or keys2 is None:
        return None
    position, rows, inverse = {}, ([], []), []
    for side, keys in enumerate((keys1, keys2)):
        for i, key in enumerate(keys):
            if key not in position:
                position[key] = (side, len(rows[side]))
                rows[side].append(i)
            inverse.append(position[key])
    offset = (0, len(rows[0]))
    inverse = np.array([offset[side] + j for side, j in inverse], dtype="int64")
    return (np.array(rows[0], "int64"), np.array(rows[1], "int64")), inverse


def _take(x, rows):
    if isinstance(x, dict):
        return {k: np.asarray(v)[rows] for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [x[i] for i in rows]
    return np.asarray(x)[rows]


def _concat(a, b):
    if isinstance(a, dict):
        return {k: np.concatenate([a[k], b[k]]) for k in a}
    if isinstance(a, list):
        return a + b
    return np.concatenate([a, b])


def _length(x):
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)
