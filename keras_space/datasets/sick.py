"""Reader of the SICK layout (SemEval-2014 task 1) and contrastive tuples built from it."""

import collections
import os

import numpy as np

from keras_space.api_export import keras_space_export
from keras_space.datasets._lines import decoded_lines, finite_score
from keras_space.utils import validation

HEADER = ("pair_ID", "sentence_A", "sentence_B", "relatedness_score", "entailment_judgment")
JUDGMENTS = ("ENTAILMENT", "NEUTRAL", "CONTRADICTION")

SickPairs = collections.namedtuple(
    "SickPairs", ["pair_ids", "sentences_a", "sentences_b", "relatedness", "judgments"]
)
SickPairs.__doc__ = """SICK sentence pairs: ids, sentences, relatedness (1-5, float64), judgments."""
keras_space_export("keras_space.datasets.SickPairs", serializable=False)(SickPairs)

ContrastiveTuples = collections.namedtuple(
    "ContrastiveTuples", ["anchors", "positives", "negatives", "labels", "hard"]
)
ContrastiveTuples.__doc__ = """(anchor, positive[, negative]) sentence tuples for contrastive training.

`negatives` is None without hard negatives; `labels` (int64) number the anchors'
distinct sentences (for `InfoNCE(mask_duplicates=True)`: tuples of one premise are
not each other's negatives); `hard` (bool) says which negative is a real
contradiction rather than a random sentence."""
keras_space_export("keras_space.datasets.ContrastiveTuples", serializable=False)(ContrastiveTuples)


@keras_space_export("keras_space.datasets.load_sick")
def load_sick(path):
    """Read a SICK file: a tab-separated header, then one pair a line.

    The layout of SemEval-2014 task 1 (`SICK_train.txt`, `SICK_trial.txt`):
    `pair_ID<TAB>sentence_A<TAB>sentence_B<TAB>relatedness_score<TAB>entailment_judgment`,
    the judgment one of ENTAILMENT, NEUTRAL, CONTRADICTION. Every refusal names
    `path:line` (a missing or different header, a wrong number of fields, a
    relatedness that is not a finite number in [1, 5], an unknown judgment, an empty
    sentence, bytes that are not UTF-8, a file without pairs).

    Args:
        path: the file.

    Returns:
        A `SickPairs(pair_ids, sentences_a, sentences_b, relatedness, judgments)`:
        lists of str, `relatedness` a float64 array.

    Example:

    ```python
    from keras_space.datasets import load_sick

    sick = load_sick("../shared/data/sick/SICK_trial.txt")
    len(sick.sentences_a), sick.judgments[0]        # (500, 'NEUTRAL')
    ```
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be a SICK file. Received: path={path!r}")
    ids, a, b, relatedness, judgments = [], [], [], [], []
    lines = decoded_lines(path, "SICK")
    header = next(lines, None)
    if header is None or tuple(header[1].split("\t")) != HEADER:
        found = "nothing" if header is None else repr(header[1][:120])
        raise ValueError(f"{path}:1: expected the SICK header {chr(9).join(HEADER)!r}; found {found}")
    for lineno, line in lines:
        fields = line.split("\t")
        if len(fields) != len(HEADER):
            raise ValueError(f"{path}:{lineno}: expected {len(HEADER)} tab-separated fields, got {len(fields)}")
        pair_id, s1, s2, score, judgment = fields
        if not s1.strip() or not s2.strip():
            raise ValueError(f"{path}:{lineno}: an empty sentence")
        value = finite_score(path, lineno, "relatedness_score", score)
        if not 1.0 <= value <= 5.0:
            raise ValueError(
                f"{path}:{lineno}: relatedness_score must lie in [1, 5] (SICK's scale). "
                f"Received: relatedness_score={score!r}"
            )
        if judgment not in JUDGMENTS:
            raise ValueError(f"{path}:{lineno}: entailment_judgment {judgment!r} is not one of {JUDGMENTS}")
        ids.append(pair_id)
        a.append(s1)
        b.append(s2)
        relatedness.append(value)
        judgments.append(judgment)
    if not ids:
        raise ValueError(f"{path}: no sentence pairs after the header")
    return SickPairs(ids, a, b, np.asarray(relatedness, dtype="float64"), judgments)


@keras_space_export("keras_space.datasets.sick_contrastive_tuples")
def sick_contrastive_tuples(pairs, hard_negatives=True, without_hard_negative="random", seed=0):
    """(anchor, positive, hard negative) tuples from SICK, supervised-SimCSE style.

    Every ENTAILMENT pair (A entails B) gives the tuple (A, B). Its hard negative
    is a sentence that contradicts A: a CONTRADICTION pair has A on either side
    (contradiction is symmetric); one is drawn (with `seed`) when there are
    several. In SICK train only 259 of the 1,299 entailment pairs have one, so
    the others get a random sentence of the file that is neither A nor B nor
    paired with A (`without_hard_negative="random"`, as dense retrieval falls
    back to random negatives) or are dropped (`"drop"`).

    Args:
        pairs: a `SickPairs` (from `load_sick`).
        hard_negatives: build the third element. Defaults to `True`.
        without_hard_negative: "random" or "drop" (see above). Defaults to `"random"`.
        seed: for the draws. Defaults to `0`.

    Returns:
        A `ContrastiveTuples(anchors, positives, negatives, labels, hard)`:
        lists of str (`negatives` None without hard negatives), `labels` int64
        ids of the anchor sentences, `hard` a bool array (True where the
        negative is a contradiction).

    Example:

    ```python
    from keras_space.datasets import load_sick, sick_contrastive_tuples

    tuples = sick_contrastive_tuples(load_sick("../shared/data/sick/SICK_train.txt"))
    x = (tuples.anchors, tuples.positives, tuples.negatives)   # GradCacheModel.fit(x, tuples.labels)
    ```
    """
    if not isinstance(pairs, SickPairs):
        raise ValueError(f"`pairs` must be a SickPairs from load_sick. Received: pairs of type {type(pairs).__name__}")
    lengths = {name: len(getattr(pairs, name)) for name in SickPairs._fields}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"`pairs` fields must have one length. Received: pairs with lengths {lengths}")
    if "ENTAILMENT" not in pairs.judgments:
        raise ValueError(
            "`pairs` must hold ENTAILMENT pairs: they are the (anchor, positive) tuples. "
            f"Received: pairs with judgments {sorted(set(pairs.judgments))}"
        )
    hard_negatives = validation.strict_bool("hard_negatives", hard_negatives)
    without_hard_negative = validation.choice("without_hard_negative", without_hard_negative, ("random", "drop"))
    rng = np.random.default_rng(validation.non_negative_int("seed", seed))
    contradicts, related = collections.defaultdict(list), collections.defaultdict(set)
    for s1, s2, judgment in zip(pairs.sentences_a, pairs.sentences_b, pairs.judgments, strict=True):
        related[s1].add(s2)
        related[s2].add(s1)
        if judgment == "CONTRADICTION":
            contradicts[s1].append(s2)
            contradicts[s2].append(s1)
    sentences = sorted(set(pairs.sentences_a) | set(pairs.sentences_b))
    anchors, positives, negatives, hard = [], [], [], []
    for s1, s2, judgment in zip(pairs.sentences_a, pairs.sentences_b, pairs.judgments, strict=True):
        if judgment != "ENTAILMENT":
            continue
        if hard_negatives:
            options = sorted(set(contradicts[s1]) - {s2})
            if options:
                negatives.append(options[rng.integers(len(options))])
            elif without_hard_negative == "drop":
                continue
            else:
                if len(sentences) <= len(related[s1] | {s1, s2}):
                    raise ValueError(
                        f"No random negative for {s1!r}: every sentence of `pairs` is it, its "
                        "positive or paired with it. Use without_hard_negative='drop' or more data."
                    )
                while True:
                    candidate = sentences[rng.integers(len(sentences))]
                    if candidate not in (s1, s2) and candidate not in related[s1]:
                        break
                negatives.append(candidate)
            hard.append(bool(options))
        anchors.append(s1)
        positives.append(s2)
    ids = {s: i for i, s in enumerate(dict.fromkeys(anchors))}
    labels = np.asarray([ids[s] for s in anchors], dtype="int64")
    return ContrastiveTuples(anchors, positives, negatives if hard_negatives else None, labels,
                             np.asarray(hard if hard_negatives else [False] * len(anchors), dtype=bool))
