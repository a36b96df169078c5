"""DSADS loader: the real archive (parsed once per module), and small hand-made segment trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harkd.data.loaders import dsads
from harkd.data.registry import get_dataset
from harkd.errors import HarkdError



# ---------------------------------------------------------------------------------------------- real archive

@pytest.fixture(scope="module")
def recordings(installed_root):
    tree = installed_root / "dsads"  # the archive as `harkd data install` unpacked it
    root = dsads.locate(tree)
    assert root == tree
    return dsads.load(root)


@pytest.mark.realdata
def test_real_archive_counts(recordings):
    assert len(recordings) == 9120
    assert {r.subject for r in recordings} == {f"p{i}" for i in range(1, 9)}
    assert all(r.signals.shape == (125, 45) and r.rate_hz == 25.0 for r in recordings)
    assert {r.class_names for r in recordings} == {dsads.CLASS_NAMES} and len(dsads.CLASS_NAMES) == 19
    assert sum(r.interpolated_samples for r in recordings) == 0  # the publisher's data has no gaps
    counts = np.bincount([r.labels[0] for r in recordings], minlength=19)
    assert counts.tolist() == [480] * 19


@pytest.mark.realdata
def test_real_archive_labels_and_values(recordings):
    first = recordings[0]
    assert (first.subject, first.session) == ("p1", "a01/s01")
    assert first.source.endswith("data/a01/p1/s01.txt")
    assert first.signals[0, :4].tolist() == pytest.approx([8.1305, 1.0349, 5.4217, -0.009461])
    for rec in recordings:
        assert (rec.labels == int(rec.session[1:3]) - 1).all(), rec.session
        assert rec.labelled_segments() == 1


# ---------------------------------------------------------------------------------------------- hand-made trees

def segment_values(seed: int, rows: int = 125) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(size=(rows, 45)), 4)


def write_segment(root: Path, activity: int, subject: int, segment: int, values: np.ndarray | None = None) -> Path:
    path = root / "data" / f"a{activity:02d}" / f"p{subject}" / f"s{segment:02d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = segment_values(activity * 100 + subject * 10 + segment) if values is None else values
    path.write_text("".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in values))
    return path


def test_partial_tree_loads_what_exists(tmp_path):
    write_segment(tmp_path, 3, 2, 1)
    write_segment(tmp_path, 3, 2, 2)
    write_segment(tmp_path, 19, 8, 60)
    (tmp_path / "data" / "a05" / "p4").mkdir(parents=True)  # an empty subject folder is skipped
    recs = dsads.load(tmp_path)
    assert [(r.subject, r.session) for r in recs] == [("p2", "a03/s01"), ("p2", "a03/s02"), ("p8", "a19/s60")]
    assert [r.labels[0] for r in recs] == [2, 2, 18]
    assert recs[2].class_names[18] == "playing_basketball"
    np.testing.assert_allclose(recs[1].signals, segment_values(3 * 100 + 2 * 10 + 2), rtol=1e-6)
    assert recs[0].channels[0].name == "torso/acc/x" and recs[0].channels[44].name == "left_leg/mag/z"
    assert recs[0].channels[44].unit == "a.u." and recs[0].channels[3].unit == "rad/s"


def test_empty_tree_is_an_error(tmp_path):
    (tmp_path / "data" / "a01" / "p1").mkdir(parents=True)
    with pytest.raises(HarkdError, match="no segment files"):
        dsads.load(tmp_path)


def test_file_truncated_mid_row_names_file_and_row(tmp_path):
    write_segment(tmp_path, 1, 1, 1)
    path = write_segment(tmp_path, 1, 1, 2)
    path.write_text(path.read_text()[:-200])
    with pytest.raises(HarkdError, match=r"s02\.txt: row 125 has \d+ fields, expected 45"):
        dsads.load(tmp_path)


def test_file_missing_rows_names_file_and_rows(tmp_path):
    write_segment(tmp_path, 1, 1, 1, segment_values(0, rows=100))
    with pytest.raises(HarkdError, match=r"s01\.txt: rows 101-125 are missing"):
        dsads.load(tmp_path)


def test_non_number_names_file(tmp_path):
    path = write_segment(tmp_path, 1, 1, 1)
    text = path.read_text()
    path.write_text("abc" + text[text.index(","):])
    with pytest.raises(HarkdError, match=r"s01\.txt: non-numeric value"):
        dsads.load(tmp_path)


def test_short_nan_run_is_interpolated_and_counted(tmp_path):
    values = segment_values(1)
    values[10:15, 7] = np.nan  # 5 samples = 0.2 s
    write_segment(tmp_path, 1, 1, 1, values)
    rec, = dsads.load(tmp_path)
    assert rec.interpolated_samples == 5
    np.testing.assert_allclose(rec.signals[10:15, 7], np.linspace(values[9, 7], values[15, 7], 7)[1:-1], rtol=1e-5)


def test_long_nan_run_names_file_and_rows(tmp_path):
    values = segment_values(1)
    values[20:50, 0] = np.nan  # 30 samples = 1.2 s
    write_segment(tmp_path, 1, 1, 1, values)
    with pytest.raises(HarkdError, match=r"s01\.txt: rows 21-50: column \d+ is missing"):
        dsads.load(tmp_path)
    assert dsads.load(tmp_path, max_gap_s=2.0)[0].interpolated_samples == 30


def test_unknown_activity_folder_is_an_error(tmp_path):
    write_segment(tmp_path, 20, 1, 1)
    with pytest.raises(HarkdError, match="unknown activity a20"):
        dsads.load(tmp_path)


def test_locate_finds_nested_layout(tmp_path):
    write_segment(tmp_path / "daily+and+sports+activities", 1, 1, 1)
    assert dsads.locate(tmp_path) == tmp_path / "daily+and+sports+activities"
    assert dsads.locate(tmp_path / "daily+and+sports+activities") == tmp_path / "daily+and+sports+activities"
    assert dsads.locate(tmp_path / "daily+and+sports+activities" / "data") is None


def test_registered_spec():
    spec = get_dataset("dsads")
    assert spec.default_windowing.length == spec.default_windowing.stride == 125
    assert spec.archives == {"dsads.tar.xz": "4ba8a6bbebc42ffa69acfd2086aca71e70771d8e2ae7a5fb2a633c454c02fe3b"}
    assert spec.options == {"max_gap_s": 1.0} and spec.licence == "CC BY 4.0"
