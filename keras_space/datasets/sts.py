"""Reader of the SemEval STS tsv format (`score<TAB>sentence1<TAB>sentence2`)."""

import os

import numpy as np

from keras_space.api_export import keras_space_export
from keras_space.datasets._lines import decoded_lines, finite_score
from keras_space.utils import validation


def _read_file(path, skip_unscored):
    s1, s2, scores = [], [], []
    for lineno, line in decoded_lines(path, "STS"):
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(
                f"{path}:{lineno}: expected 'score<TAB>s1<TAB>s2', got {len(parts)} fields"
            )
        score, a, b = parts
        if not score.strip():
            if skip_unscored:
                continue
            value = float("nan")
        else:
            value = finite_score(path, lineno, "score", score,
                                 hint=" (an unscored pair has an empty score field)")
        s1.append(a)
        s2.append(b)
        scores.append(value)
    if not s1:
        raise ValueError(f"{path}: no sentence pairs (the file is empty or every pair is unscored)")
    return s1, s2, np.asarray(scores, dtype="float64")


@keras_space_export("keras_space.datasets.load_sts")
def load_sts(path, skip_unscored=True):
    """Read STS sentence pairs with gold similarity scores.

    Args:
        path: a `*.tsv` file (`score<TAB>sentence1<TAB>sentence2` per line), or
            a folder: every `*.tsv` below it, read file by file.
        skip_unscored: drop pairs whose score field is empty (they have no gold
            score; the standard evaluation skips them). If False they are kept
            with score NaN. Defaults to `True`.

    Returns:
        For a file: `(sentences1, sentences2, scores)` (two lists of str and a
        float64 array). For a folder: a dict from the file's path relative to
        the folder, without `.tsv` (e.g. `"2012/MSRpar.test"`), to such a
        tuple, in sorted order.

    Example:

    ```python
    from keras_space.datasets import load_sts

    s1, s2, gold = load_sts("../shared/data/sts/2012/MSRpar.test.tsv")
    by_file = load_sts("../shared/data/sts")  # {"2012/MSRpar.test": (...), ...}
    ```
    """
    skip_unscored = validation.strict_bool("skip_unscored", skip_unscored)
    path = os.fspath(path)
    if os.path.isfile(path):
        return _read_file(path, skip_unscored)
    if not os.path.isdir(path):
        raise ValueError(f"`path` must be an STS .tsv file or a folder. Received: path={path!r}")
    found = {}
    for root, _, files in os.walk(path):
        for name in files:
            if name.endswith(".tsv"):
                full = os.path.join(root, name)
                key = os.path.relpath(full, path)[: -len(".tsv")].replace(os.sep, "/")
                found[key] = _read_file(full, skip_unscored)
    if not found:
        raise ValueError(f"No .tsv files under `path`. Received: path={path!r}")
    return dict(sorted(found.items()))
