"""HAPT loader and the UCI-HAR protocol: the real archive, a tiny hand-made RawData and hand-made recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harkd.data.loaders import hapt
from harkd.data.protocols import UCI_HAR_CLASSES, protocol_counts, uci_har
from harkd.data.recording import Recording
from harkd.data.registry import get_dataset
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError

ACTIVITIES = (*UCI_HAR_CLASSES, "STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE",
              "LIE_TO_STAND")
CLASS_NAMES = (*ACTIVITIES, "null")
NULL = len(ACTIVITIES)


# ---------------------------------------------------------------------------------------------- real archive

@pytest.fixture(scope="module")
def recordings(installed_root):
    tree = installed_root / "hapt"  # the archive as `harkd data install` unpacked it
    root = hapt.locate(tree)
    assert root == tree
    return hapt.load(root)


@pytest.mark.realdata
def test_real_archive_counts(recordings):
    assert len(recordings) == 61
    assert {r.subject for r in recordings} == {f"user{i:02d}" for i in range(1, 31)}
    assert sum(r.labelled_segments() for r in recordings) == 1214
    assert sum(len(r.labels) for r in recordings) == 1_122_772
    assert all(r.signals.shape[1] == 6 and r.rate_hz == 50.0 for r in recordings)
    assert {(r.class_names, r.null_class) for r in recordings} == {(CLASS_NAMES, NULL)}
    assert [c.name for c in recordings[0].channels] == [f"waist/{m}/{a}" for m in ("acc", "gyro") for a in "xyz"]


@pytest.mark.realdata
def test_real_labels_are_one_based_and_inclusive(recordings):
    # labels.txt rows 1-2: "1 1 5 250 1232" (STANDING) and "1 1 7 1233 1392" (STAND_TO_SIT).
    exp01 = recordings[0]
    assert (exp01.subject, exp01.session) == ("user01", "exp01")
    assert exp01.labels[248] == NULL and exp01.labels[249] == exp01.labels[1231] == 4
    assert exp01.labels[1232] == exp01.labels[1391] == 6


@pytest.mark.realdata
def test_uci_har_protocol_counts(recordings):
    protocol = uci_har(recordings)
    assert len(protocol.train_subjects) == 21 and len(protocol.test_subjects) == 9
    assert not set(protocol.train_subjects) & set(protocol.test_subjects)
    # One recording per basic-activity segment: a window can never straddle two activities.
    assert len(protocol.recordings) == 856
    assert all(len(np.unique(r.labels)) == 1 and r.null_class is None for r in protocol.recordings)
    assert make_windows(protocol.recordings, protocol.windowing).x.shape[1:] == (6, 128)
    # The registry's counts, as `harkd data info hapt --protocol uci-har` prints them (see harkd.data.protocols).
    assert protocol_counts("uci-har", recordings) == {
        "train": {"windows": 7415, "subjects": 21, "original_windows": 7352},
        "test": {"windows": 2996, "subjects": 9, "original_windows": 2947}}


# ---------------------------------------------------------------------------------------------- hand-made RawData

def write_experiment(raw: Path, experiment: int, user: int, acc: np.ndarray, gyro: np.ndarray) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for kind, values in (("acc", acc), ("gyro", gyro)):
        (raw / f"{kind}_exp{experiment:02d}_user{user:02d}.txt").write_text(
            "".join(" ".join("NaN" if np.isnan(v) else repr(float(v)) for v in row) + "\n" for row in values))


def fake_rawdata(root: Path, labels: str, rows: int = 40) -> Path:
    raw = root / "RawData"
    rng = np.random.default_rng(0)
    write_experiment(raw, 1, 1, rng.normal(size=(rows, 3)), rng.normal(size=(rows, 3)))
    write_experiment(raw, 2, 7, rng.normal(size=(rows, 3)), rng.normal(size=(rows, 3)))
    (raw / "activity_labels.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(ACTIVITIES, 1)))
    (raw / "labels.txt").write_text(labels)
    return raw


def test_labels_are_one_based_inclusive(tmp_path):
    fake_rawdata(tmp_path, "1 1 1 3 5\n1 1 7 6 6\n2 7 6 1 40\n")
    exp01, exp02 = hapt.load(tmp_path)
    assert (exp01.subject, exp01.session, exp02.subject) == ("user01", "exp01", "user07")
    expected = np.full(40, NULL)
    expected[2:5] = 0
    expected[5] = 6
    np.testing.assert_array_equal(exp01.labels, expected)
    assert (exp02.labels == 5).all()
    assert exp01.labelled_segments() == 2 and exp01.class_names == CLASS_NAMES


def test_signals_are_acc_then_gyro(tmp_path):
    raw = tmp_path / "RawData"
    acc, gyro = np.arange(30.0).reshape(10, 3), -np.arange(30.0).reshape(10, 3)
    fake_rawdata(tmp_path, "1 1 1 1 2\n")
    write_experiment(raw, 1, 1, acc, gyro)
    np.testing.assert_array_equal(hapt.load(tmp_path)[0].signals, np.hstack([acc, gyro]))


def test_mismatched_lengths_name_both_files(tmp_path):
    raw = fake_rawdata(tmp_path, "1 1 1 3 5\n")
    write_experiment(raw, 2, 7, np.zeros((40, 3)), np.zeros((39, 3)))
    with pytest.raises(HarkdError, match=r"acc_exp02_user07\.txt has 40 rows but .*gyro_exp02_user07\.txt has 39"):
        hapt.load(tmp_path)


@pytest.mark.parametrize("labels, message", [
    ("1 1 1 30 41\n", r"row 1 labels samples 30-41, outside acc_exp01_user01\.txt \(samples 1-40\)"),
    ("1 1 1 0 5\n", r"row 1 labels samples 0-5, outside"),
    ("1 1 1 3 5\n1 1 2 5 8\n", r"row 2 labels samples 5-8 of acc_exp01_user01\.txt, which an earlier row"),
    ("1 2 1 3 5\n", r"row 1 gives user 2 for experiment 1, but its file is acc_exp01_user01\.txt"),
    ("3 1 1 3 5\n", r"row 1 labels experiment 3, which has no acc_exp03_user01\.txt"),
    ("1 1 13 3 5\n", r"row 1 has activity 13, expected 1\.\.12"),
    ("1 1 1 3\n", r"labels\.txt: row 1 has 4 fields, expected 5"),
])
def test_bad_labels_name_the_row(tmp_path, labels, message):
    fake_rawdata(tmp_path, labels)
    with pytest.raises(HarkdError, match=message):
        hapt.load(tmp_path)


def test_nan_runs(tmp_path):
    raw = fake_rawdata(tmp_path, "1 1 1 3 5\n", rows=200)
    gyro = np.ones((200, 3))
    gyro[10:20, 1] = np.nan  # 0.2 s at 50 Hz
    write_experiment(raw, 2, 7, np.ones((200, 3)), gyro)
    assert hapt.load(tmp_path)[1].interpolated_samples == 10
    gyro[10:70, 1] = np.nan  # 1.2 s
    write_experiment(raw, 2, 7, np.ones((200, 3)), gyro)
    with pytest.raises(HarkdError, match=r"gyro_exp02_user07\.txt: rows 11-70: column \d+ is missing"):
        hapt.load(tmp_path)


def test_locate(tmp_path):
    fake_rawdata(tmp_path / "uci-hapt", "1 1 1 3 5\n")
    assert hapt.locate(tmp_path) == tmp_path / "uci-hapt"
    assert hapt.locate(tmp_path / "uci-hapt" / "RawData") is None


def test_registered_spec():
    spec = get_dataset("hapt")
    w = spec.default_windowing
    assert (w.length, w.stride, w.label_rule, w.drop_null) == (128, 64, "majority", True)
    assert spec.archives == {"uci-hapt.tar.xz": "6cf9cf7efd1b010bb29b6212f6d1614196c704ea1963f61b99a9c153f74dba4f"}


# ---------------------------------------------------------------------------------------------- UCI-HAR on fakes

def recording(user: int, labels: list[int]) -> Recording:
    return Recording(np.zeros((len(labels), 6)), hapt.CHANNELS, labels, CLASS_NAMES, hapt.subject_name(user),
                     "exp01", 50.0, null_class=NULL)


def test_uci_har_cuts_basic_activity_segments():
    walking_transition_walking = [0] * 130 + [6] * 20 + [0] * 130 + [NULL] * 10 + [1] * 200
    recs = [recording(user, walking_transition_walking if user == 1 else [5] * 128) for user in range(1, 31)]
    protocol = uci_har(recs)
    user01 = [r for r in protocol.recordings if r.subject == "user01"]
    assert [(r.session, r.labels[0], len(r.labels)) for r in user01] == [
        ("exp01/1-130", 0, 130), ("exp01/151-280", 0, 130), ("exp01/291-490", 1, 200)]
    assert protocol.test_subjects == ("user02", "user04", "user09", "user10", "user12", "user13", "user18",
                                      "user20", "user24")
    assert "user01" in protocol.train_subjects and len(protocol.train_subjects) == 21
    windows = make_windows(protocol.recordings, protocol.windowing)
    assert windows.class_names == UCI_HAR_CLASSES
    assert (windows.subjects == "user01").sum() == 1 + 1 + 2  # no window spans the transition


def test_uci_har_needs_the_test_subjects_and_hapt_classes():
    with pytest.raises(HarkdError, match="test subject"):
        uci_har([recording(1, [0] * 200)])
    other = Recording(np.zeros((5, 6)), hapt.CHANNELS, [0] * 5, ("a", "b"), "user01", "exp01", 50.0)
    with pytest.raises(HarkdError, match="needs HAPT recordings"):
        uci_har([other])
