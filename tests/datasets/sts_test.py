import numpy as np
import pytest

from keras_space.datasets import load_sts


def test_reads_the_format_and_skips_unscored(tmp_path):
    path = tmp_path / "toy.test.tsv"
    path.write_text("4.4\tA cat sits.\tA cat is sitting.\n\tNo score here.\tNone.\n0.5\tx\ty\n\n", encoding="utf-8")
    s1, s2, scores = load_sts(path)
    assert s1 == ["A cat sits.", "x"] and s2 == ["A cat is sitting.", "y"]
    np.testing.assert_array_equal(scores, [4.4, 0.5])
    s1, _, scores = load_sts(path, skip_unscored=False)
    assert len(s1) == 3 and np.isnan(scores[1])


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("1.0\tonly two fields\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.tsv:1"):
        load_sts(bad)
    bad.write_text("high\ta\tb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'high' is not a number"):
        load_sts(bad)
    with pytest.raises(ValueError, match="path="):
        load_sts(tmp_path / "missing")


def test_real_sts_folder(sts_dir):
    data = load_sts(sts_dir)
    assert "2012/MSRpar.test" in data and "2016/headlines.test" in data
    assert len(data) == 23
    s1, s2, scores = data["2012/MSRpar.test"]
    assert len(s1) == len(s2) == len(scores) == 750
    assert scores.min() >= 0 and scores.max() <= 5
    # 2016 files carry many unscored lines: only the scored 249 of headlines remain
    assert len(data["2016/headlines.test"][2]) == 249


@pytest.mark.parametrize(
    "content, match",
    [
        (b"1.0\ta\tb\nnan\tc\td\n", r"bad.tsv:2: score 'nan' is not finite"),
        (b"inf\ta\tb\n", r"bad.tsv:1: score 'inf' is not finite"),
        (b"", r"bad.tsv: no sentence pairs"),
        (b"\tunscored\tpair\n", r"bad.tsv: no sentence pairs"),
        (b"1.0\ta\tb\n2.0\tcaf\xe9\td\n", r"bad.tsv:2: not UTF-8"),
    ],
)
def test_refusals_name_the_file_and_line(tmp_path, content, match):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_sts(bad, skip_unscored=True)
