import os

import numpy as np
import pytest

from keras_space.datasets import load_sick, sick_contrastive_tuples

HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
TOY = HEADER + (
    "1\tA man plays.\tA person plays.\t4.5\tENTAILMENT\n"
    "2\tA man plays.\tNobody plays.\t2.0\tCONTRADICTION\n"
    "3\tA dog runs.\tAn animal runs.\t4.2\tENTAILMENT\n"
    "4\tA cat sleeps.\tA dog runs.\t1.5\tNEUTRAL\n"
    "\n"
    "5\tA woman sings.\tA man plays.\t1.1\tCONTRADICTION\n"
    "6\tA man plays.\tA guy is playing.\t4.8\tENTAILMENT\n"
)


def test_reads_the_layout(tmp_path):
    path = tmp_path / "SICK_toy.txt"
    path.write_text(TOY, encoding="utf-8")
    sick = load_sick(path)
    assert sick.pair_ids == ["1", "2", "3", "4", "5", "6"]
    assert sick.sentences_a[1] == "A man plays." and sick.sentences_b[1] == "Nobody plays."
    np.testing.assert_array_equal(sick.relatedness, [4.5, 2.0, 4.2, 1.5, 1.1, 4.8])
    assert sick.relatedness.dtype == np.float64
    assert sick.judgments[:2] == ["ENTAILMENT", "CONTRADICTION"]


def test_tuples_take_contradictions_from_either_side_and_fill_or_drop_the_rest(tmp_path):
    path = tmp_path / "SICK_toy.txt"
    path.write_text(TOY, encoding="utf-8")
    sick = load_sick(path)
    t = sick_contrastive_tuples(sick)
    assert t.anchors == ["A man plays.", "A dog runs.", "A man plays."]
    assert t.positives == ["A person plays.", "An animal runs.", "A guy is playing."]
    # "A man plays." is contradicted by "Nobody plays." (as A) and "A woman sings." (as B)
    assert t.negatives[0] in ("Nobody plays.", "A woman sings.") and t.negatives[2] in ("Nobody plays.", "A woman sings.")
    # "A dog runs." has none: a random sentence that is not paired with it
    assert t.negatives[1] not in ("A dog runs.", "An animal runs.", "A cat sleeps.")
    np.testing.assert_array_equal(t.hard, [True, False, True])
    np.testing.assert_array_equal(t.labels, [0, 1, 0])      # one id per anchor sentence
    dropped = sick_contrastive_tuples(sick, without_hard_negative="drop")
    assert dropped.anchors == ["A man plays.", "A man plays."] and dropped.hard.all()
    pairs = sick_contrastive_tuples(sick, hard_negatives=False)
    assert pairs.negatives is None and len(pairs.anchors) == 3 and not pairs.hard.any()
    # the draws are seeded
    assert sick_contrastive_tuples(sick, seed=3).negatives == sick_contrastive_tuples(sick, seed=3).negatives


@pytest.mark.parametrize("content, match", [
    ("", r"toy.txt:1: expected the SICK header.*found nothing"),
    ("id\ta\tb\tscore\tlabel\n1\tx\ty\t1\tNEUTRAL\n", r"toy.txt:1: expected the SICK header"),
    (HEADER, r"toy.txt: no sentence pairs after the header"),
    (HEADER + "1\tx\ty\t4.0\n", r"toy.txt:2: expected 5 tab-separated fields, got 4"),
    (HEADER + "1\tx\ty\tnan\tNEUTRAL\n", r"toy.txt:2: relatedness_score 'nan' is not finite"),
    (HEADER + "\n1\tx\ty\thigh\tNEUTRAL\n", r"toy.txt:3: relatedness_score 'high' is not a number"),
    (HEADER + "1\tx\ty\t3\tentails\n", r"toy.txt:2: entailment_judgment 'entails' is not one of"),
    (HEADER + "1\t \ty\t3\tNEUTRAL\n", r"toy.txt:2: an empty sentence"),
    (HEADER.encode() + b"1\tx\t\xff\t3\tNEUTRAL\n", r"toy.txt:2: not UTF-8"),
])
def test_bad_files_name_the_line(tmp_path, content, match):
    path = tmp_path / "toy.txt"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(ValueError, match=match):
        load_sick(path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="path="):
        load_sick(tmp_path / "missing.txt")
    path = tmp_path / "toy.txt"
    path.write_text(TOY, encoding="utf-8")
    sick = load_sick(path)
    with pytest.raises(ValueError, match="pairs of type tuple"):
        sick_contrastive_tuples(tuple(sick))
    with pytest.raises(ValueError, match="without_hard_negative='skip'"):
        sick_contrastive_tuples(sick, without_hard_negative="skip")
    with pytest.raises(ValueError, match="hard_negatives=1"):
        sick_contrastive_tuples(sick, hard_negatives=1)
    with pytest.raises(ValueError, match="seed=-1"):
        sick_contrastive_tuples(sick, seed=-1)
    # nothing unrelated to draw a random negative from: an error, not an endless draw
    path.write_text(HEADER + "1\tA man plays.\tA person plays.\t4.5\tENTAILMENT\n", encoding="utf-8")
    with pytest.raises(ValueError, match="No random negative for 'A man plays.'"):
        sick_contrastive_tuples(load_sick(path))
    assert sick_contrastive_tuples(load_sick(path), without_hard_negative="drop").anchors == []


def test_real_sick_files(sick_dir):
    train = load_sick(os.path.join(sick_dir, "SICK_train.txt"))
    trial = load_sick(os.path.join(sick_dir, "SICK_trial.txt"))
    assert len(train.pair_ids) == 4500 and len(trial.pair_ids) == 500
    assert train.relatedness.min() >= 1 and train.relatedness.max() <= 5
    assert {j: train.judgments.count(j) for j in set(train.judgments)} == {
        "ENTAILMENT": 1299, "NEUTRAL": 2536, "CONTRADICTION": 665}
    t = sick_contrastive_tuples(train)
    assert len(t.anchors) == 1299 and int(t.hard.sum()) == 259
    contradictions = {frozenset(p) for p, j in zip(zip(train.sentences_a, train.sentences_b, strict=True), train.judgments,
                                                   strict=True) if j == "CONTRADICTION"}
    for a, n, hard in zip(t.anchors, t.negatives, t.hard, strict=True):
        assert (frozenset((a, n)) in contradictions) == hard
