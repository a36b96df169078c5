"""OpenPack loader: the real sample archive, and small hand-made sessions in both schemas (v1.0.0 and v0.3.0)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from harkd.data.loaders import openpack
from harkd.data.recording import ChannelSpec, Recording
from harkd.errors import HarkdError

T0 = 1_648_531_520_000  # 2022-03-29 14:25:20+09:00, in unix ms
JST = timezone(timedelta(hours=9))
STEP_MS = 1000 / 30
ATR_HEADER = ("unixtime", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z",
              "quat_w", "quat_x", "quat_y", "quat_z")


# ---------------------------------------------------------------------------------------------- real sample archive

@pytest.fixture(scope="module")
def sample_root(installed_root) -> Path:
    tree = installed_root / "openpack"  # the archive as `harkd data install` unpacked it
    root = openpack.locate(tree)
    assert root == tree
    return root


@pytest.fixture(scope="module")
def sample(sample_root) -> dict[str, Recording]:
    return {rec.subject: rec for rec in openpack.load(sample_root)}


@pytest.fixture(scope="module")
def v1_root(sample_root, tmp_path_factory) -> Path:
    """A tree with the sample's v1.0.0 folder only (the only one with segments, 1 Hz labels and E4 data)."""
    root = tmp_path_factory.mktemp("openpack-v1")
    (root / "v1.0.0").symlink_to(sample_root / "v1.0.0", target_is_directory=True)
    return root


@pytest.mark.realdata
def test_sample_recordings(sample):
    assert set(sample) == {"U0102", "U0209"}
    for minutes, rec in ((30.4, sample["U0102"]), (23.4, sample["U0209"])):
        assert rec.session == "S0500"
        assert rec.rate_hz == 30
        assert rec.duration_s / 60 == pytest.approx(minutes, rel=0.03)
        assert len(rec.channels) == 40
        assert {c.sensor for c in rec.channels} == set(openpack.ATR_DEVICES)
        assert rec.channels == sample["U0209"].channels
        assert not np.isnan(rec.signals).any()
        assert set(np.unique(rec.labels)) == set(range(len(openpack.CLASS_NAMES)))  # 10 operations and Null
        assert rec.class_names[rec.null_class] == "Null"
        assert rec.annotations["box"].max() >= 10
    assert sample["U0209"].source.endswith("v1.0.0/U0209")
    assert sample["U0102"].source.endswith("v0.3.0/U0102")  # vX.X.X holds the same session, pre-release only


@pytest.mark.realdata
def test_sample_segments_agree_with_1hz_labels(v1_root):
    [segments] = openpack.load(v1_root, label_source="segments")
    [hz] = openpack.load(v1_root, label_source="1hz")
    seg, one = segments.labels, hz.labels
    assert (seg == one).mean() >= 0.9
    # The 1 Hz file floors each segment start to its second and carries operations over the short gaps between
    # segments, so every disagreement is a switch less than 1 s early or a stretch that is Null in the segments.
    edges = np.diff(np.concatenate([[0], (seg != one).astype(np.int8), [0]]))
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        null_in_segments = (seg[start:end] == segments.null_class).all()
        early_switch = end - start <= 30 and end < len(seg) and (one[start:end] == seg[end]).all()
        assert null_in_segments or early_switch, (start, end)


@pytest.mark.realdata
def test_sample_e4(v1_root, sample_root):
    [rec] = openpack.load(v1_root, include_e4=True)
    assert len(rec.channels) == 43
    assert rec.channels[-3:] == tuple(ChannelSpec("right_wrist", "acc", axis, "G", "e401") for axis in "xyz")
    assert not np.isnan(rec.signals).any()
    with pytest.raises(HarkdError, match=r"v0\.3\.0/U0102/e4/e401/acc/S0500\.csv: file not found"):
        openpack.load(sample_root, include_e4=True)


@pytest.mark.realdata
def test_locate_nested_release(sample_root, tmp_path):
    nested = tmp_path / "openpack" / "release"
    nested.mkdir(parents=True)
    (nested / "v1.0.0").symlink_to(sample_root / "v1.0.0", target_is_directory=True)
    assert openpack.locate(tmp_path) == nested
    assert openpack.locate(tmp_path / "openpack" / "release" / "v1.0.0") is None


# ---------------------------------------------------------------------------------------------- hand-made sessions

def _fmt(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.10g}"


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *(",".join(map(str, row)) for row in rows)]) + "\n")
    return path


def write_imu(path: Path, t: np.ndarray, values: np.ndarray, header=ATR_HEADER) -> Path:
    return write_csv(path, header, [[int(ti), *map(_fmt, row)] for ti, row in zip(t, values)])


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=JST).isoformat(sep=" ", timespec="microseconds")


# (start, end) in ms after T0, operation code, box
OPS = [(0, 3000, 100, 1), (3000, 6000, 200, 1), (6500, 9000, 300, 2)]


def make_session(root: Path, version="v1.0.0", user="U0001", session="S0100", n=400, labels="segments",
                 devices=tuple(openpack.ATR_DEVICES)) -> Path:
    """ATR files at 30 ms from T0 - 500 ms and operation labels in the schema of `labels`."""
    user_dir = root / version / user
    rng = np.random.default_rng(0)
    t = T0 - 500 + np.arange(n) * 30
    for device in devices:
        write_imu(user_dir / "atr" / device / f"{session}.csv", t, rng.normal(size=(n, 10)))
    seconds = range(0, 9000, 1000)

    def op_at(ms):
        return next(((code, box) for start, end, code, box in OPS if start <= ms < end), (8100, ""))

    if labels == "segments":
        write_csv(user_dir / "annotation" / "openpack-operations" / f"{session}.csv",
                  ("uuid", "user", "session", "box", "id", "operation", "start", "end", "actions"),
                  [[f"op:{i}", user, session, box, code, "x", iso(T0 + start), iso(T0 + end), ""]
                   for i, (start, end, code, box) in enumerate(OPS)])
    elif labels == "1hz":
        write_csv(user_dir / "annotation" / "openpack-operations-1hz" / f"{session}.csv",
                  ("unixtime", "user", "session", "box", "id"),
                  [[T0 + s, user, session, op_at(s)[1], op_at(s)[0]] for s in seconds])
    elif labels == "activity-1s":
        write_csv(user_dir / "annotation" / "activity-1s" / f"{session}.csv",
                  ("unixtime", "user", "session", "box", "operation", "action"),
                  [[T0 + s, user, session, op_at(s)[1], op_at(s)[0], 100] for s in seconds])
    return user_dir


def grid_for(rate_hz=30.0) -> np.ndarray:
    """Sample times the loader resamples make_session's streams (T0 - 500 ms to T0 + 11470 ms) to."""
    step = 1000 / rate_hz
    return T0 - 500 + np.arange(int(399 * 30 // step) + 1) * step


def expected_labels(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = {code: i for i, (code, _) in enumerate(openpack.OPERATIONS)}
    labels = np.full(len(grid), openpack.NULL_CLASS)
    box = np.full(len(grid), -1)
    for start, end, code, b in OPS:
        inside = (grid >= T0 + start) & (grid < T0 + end)
        labels[inside], box[inside] = index[code], b
    return labels, box


def test_segments_times_with_offset(tmp_path):
    make_session(tmp_path)
    [rec] = openpack.load(tmp_path)
    grid = grid_for()
    labels, box = expected_labels(grid)
    np.testing.assert_array_equal(rec.labels, labels)
    np.testing.assert_array_equal(rec.annotations["box"], box)
    assert (rec.subject, rec.session, rec.rate_hz) == ("U0001", "S0100", 30.0)
    assert rec.source == str(tmp_path / "v1.0.0" / "U0001")


@pytest.mark.parametrize("labels", ["1hz", "activity-1s"])
def test_1hz_labels_cover_the_following_second(tmp_path, labels):
    make_session(tmp_path, version="v0.3.0" if labels == "activity-1s" else "v1.0.0", labels=labels)
    [rec] = openpack.load(tmp_path)
    grid = grid_for()
    # OPS starts and ends on whole seconds except 6500: that 1 Hz second (6000-7000) is Null, so 300 starts at 7000.
    expected, box = expected_labels(grid)
    late = (grid >= T0 + 6500) & (grid < T0 + 7000)
    expected[late], box[late] = openpack.NULL_CLASS, -1
    np.testing.assert_array_equal(rec.labels, expected)
    np.testing.assert_array_equal(rec.annotations["box"], box)


def test_resampling_keeps_a_linear_ramp_linear(tmp_path):
    """Streams with different starts, rates, shuffled and duplicated rows resample onto one exact ramp."""
    user_dir = make_session(tmp_path)  # for the labels; the ATR files are replaced below
    layouts = {"atr01": (5, 30, 400), "atr02": (0, 33, 380), "atr03": (20, 31, 390), "atr04": (13, 30, 400)}
    rng = np.random.default_rng(1)
    for d, (device, (start, period, n)) in enumerate(layouts.items()):
        t = T0 + start + np.arange(n) * period
        values = np.array([[d * 10 + c + (c + 1) * 0.25 * (ti - T0) / 1000 for c in range(10)] for ti in t])
        if device == "atr03":  # out of order, with repeated rows
            order = np.concatenate([rng.permutation(n), np.arange(10)])
            t, values = t[order], values[order]
        write_imu(user_dir / "atr" / device / "S0100.csv", t, values)
    [rec] = openpack.load(tmp_path)
    start, end = T0 + 20, T0 + 5 + 399 * 30
    grid = start + np.arange(int((end - start) // STEP_MS) + 1) * STEP_MS
    expected = np.column_stack([d * 10 + c + (c + 1) * 0.25 * (grid - T0) / 1000 for d in range(4) for c in range(10)])
    assert rec.signals.shape == expected.shape
    np.testing.assert_allclose(rec.signals, expected, atol=1e-4)
    assert rec.interpolated_samples == 0


def test_truncated_imu_file_names_file_and_row(tmp_path):
    user_dir = make_session(tmp_path)
    path = user_dir / "atr" / "atr02" / "S0100.csv"
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind(",")])  # cut the last row mid-way
    with pytest.raises(HarkdError, match=rf"{path}: row 401 has 10 fields, expected 11"):
        openpack.load(tmp_path)


def test_truncated_annotation_names_file_and_row(tmp_path):
    user_dir = make_session(tmp_path)
    path = user_dir / "annotation" / "openpack-operations" / "S0100.csv"
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n,").rfind(",")])  # the last segment loses its end and actions
    with pytest.raises(HarkdError, match=rf"{path}: row 4 has 7 fields, expected 9"):
        openpack.load(tmp_path)


def test_missing_column_names_column_and_file(tmp_path):
    user_dir = make_session(tmp_path)
    path = user_dir / "atr" / "atr03" / "S0100.csv"
    header = tuple(c for c in ATR_HEADER if c != "gyro_y")
    write_imu(path, T0 + np.arange(400) * 30, np.zeros((400, 9)), header=header)
    with pytest.raises(HarkdError, match=rf"{path}: missing column\(s\) \['gyro_y'\]"):
        openpack.load(tmp_path)


def test_missing_label_column_names_column_and_file(tmp_path):
    user_dir = make_session(tmp_path, labels="1hz")
    path = user_dir / "annotation" / "openpack-operations-1hz" / "S0100.csv"
    write_csv(path, ("unixtime", "user", "session", "id"), [[T0, "U0001", "S0100", 100]])
    with pytest.raises(HarkdError, match=rf"{path}: missing column\(s\) \['box'\]"):
        openpack.load(tmp_path)


def test_long_nan_gap_names_file_and_rows(tmp_path):
    user_dir = make_session(tmp_path)
    path = user_dir / "atr" / "atr01" / "S0100.csv"
    values = np.ones((400, 10))
    values[100:150, 4] = np.nan  # 1.5 s at 30 ms spacing
    write_imu(path, T0 - 500 + np.arange(400) * 30, values)
    with pytest.raises(HarkdError, match=rf"{path}: rows 102-151: column '\w+' is missing"):
        openpack.load(tmp_path)


def test_short_nan_gap_is_interpolated_and_counted(tmp_path):
    user_dir = make_session(tmp_path)
    t = T0 - 500 + np.arange(400) * 30
    values = np.tile(((t - T0) / 1000)[:, None], (1, 10))
    values[200:205, 0] = np.nan
    values[300, 3:6] = np.nan
    write_imu(user_dir / "atr" / "atr04" / "S0100.csv", t, values)
    [rec] = openpack.load(tmp_path)
    assert rec.interpolated_samples == 8
    assert not np.isnan(rec.signals).any()
    ramp = (grid_for() - T0) / 1000
    np.testing.assert_allclose(rec.signals[:, 30:40], np.tile(ramp[:, None], (1, 10)), atol=1e-5)


def test_long_time_gap_names_file_and_rows(tmp_path):
    user_dir = make_session(tmp_path)
    t = T0 - 500 + np.arange(400) * 30
    t[200:] += 2000  # two seconds without samples
    path = write_imu(user_dir / "atr" / "atr02" / "S0100.csv", t, np.zeros((400, 10)))
    with pytest.raises(HarkdError, match=rf"{path}: no data for 2\.00 s between rows 201 and 202"):
        openpack.load(tmp_path)


def test_missing_device_and_e4_files_are_named(tmp_path):
    user_dir = make_session(tmp_path)
    with pytest.raises(HarkdError, match=rf"{user_dir / 'e4' / 'e401' / 'acc' / 'S0100.csv'}: file not found"):
        openpack.load(tmp_path, include_e4=True)
    (user_dir / "atr" / "atr04" / "S0100.csv").unlink()
    with pytest.raises(HarkdError, match=rf"{user_dir / 'atr' / 'atr04' / 'S0100.csv'}: file not found"):
        openpack.load(tmp_path)


def test_e4_stream_is_aligned_with_the_imus(tmp_path):
    user_dir = make_session(tmp_path)
    t = T0 - 2000 + np.arange(600) * 31.25
    write_imu(user_dir / "e4" / "e401" / "acc" / "S0100.csv", t.round(), np.tile(((t - T0) / 1000)[:, None], (1, 3)),
              header=("time", "acc_x", "acc_y", "acc_z"))
    [rec] = openpack.load(tmp_path, include_e4=True)
    assert len(rec.channels) == 43 and rec.channels[-1].sensor == "e401"
    np.testing.assert_allclose(rec.signals[:, -1], (grid_for() - T0) / 1000, atol=1e-3)


def test_version_rule(tmp_path):
    make_session(tmp_path, version="v0.3.0", labels="activity-1s")
    make_session(tmp_path, version="v1.0.0")
    make_session(tmp_path, version="vX.X.X", labels="1hz")  # same session: skipped
    make_session(tmp_path, version="vX.X.X", user="U0002", labels="1hz")  # only in the pre-release: loaded
    recs = openpack.load(tmp_path)
    assert [(r.subject, Path(r.source).parent.name) for r in recs] == [("U0001", "v1.0.0"), ("U0002", "vX.X.X")]


def test_prerelease_1hz_rows_under_segment_folder(tmp_path):
    """The pre-release keeps 1 Hz rows (column `operation`) in openpack-operations/; the header decides the kind."""
    user_dir = make_session(tmp_path, version="vX.X.X", labels="activity-1s")
    (user_dir / "annotation" / "activity-1s").rename(user_dir / "annotation" / "openpack-operations")
    [auto] = openpack.load(tmp_path)
    [hz] = openpack.load(tmp_path, label_source="1hz")
    np.testing.assert_array_equal(auto.labels, hz.labels)
    with pytest.raises(HarkdError, match="no segments operation labels for session S0100"):
        openpack.load(tmp_path, label_source="segments")


def test_bad_annotation_values(tmp_path):
    user_dir = make_session(tmp_path, labels="1hz")
    path = user_dir / "annotation" / "openpack-operations-1hz" / "S0100.csv"
    write_csv(path, ("unixtime", "user", "session", "box", "id"), [[T0, "U0001", "S0100", 1, 4242]])
    with pytest.raises(HarkdError, match=rf"{path}: row 2: unknown operation 4242"):
        openpack.load(tmp_path)
    write_csv(path, ("unixtime", "user", "session", "box", "id"), [[T0 + 9 * 3600_000, "U0001", "S0100", 1, 100]])
    with pytest.raises(HarkdError, match=rf"{path}: no operation overlaps the sensor data"):
        openpack.load(tmp_path)


def test_segment_time_without_offset_is_an_error(tmp_path):
    user_dir = make_session(tmp_path)
    path = user_dir / "annotation" / "openpack-operations" / "S0100.csv"
    path.write_text(path.read_text().replace("+09:00", "", 1))
    with pytest.raises(HarkdError, match=rf"{path}: row 2: start .* has no UTC offset"):
        openpack.load(tmp_path)


def test_spec_registration_and_options(tmp_path):
    spec = openpack.OPENPACK
    assert spec.name == "openpack" and spec.licence == "CC BY-NC-SA 4.0"
    assert spec.archives["openpack-sample.tar.xz"].startswith("623af973")
    assert openpack.CLASS_NAMES[-1] == "Null" and openpack.NULL_CLASS == 10 and len(openpack.CLASS_NAMES) == 11
    assert (spec.default_windowing.length, spec.default_windowing.stride) == (60, 30)
    make_session(tmp_path)
    [rec] = spec.load_checked(tmp_path, {"rate_hz": 15})
    assert rec.rate_hz == 15 and len(rec.labels) == len(grid_for(15))
    with pytest.raises(HarkdError, match="unknown option"):
        spec.load_checked(tmp_path, {"bogus": 1})
    with pytest.raises(HarkdError, match="label_source must be one of"):
        openpack.load(tmp_path, label_source="2hz")
    with pytest.raises(HarkdError, match="no OpenPack sessions"):
        openpack.load(tmp_path / "v1.0.0")
    assert spec.locate(tmp_path) == tmp_path and spec.locate(tmp_path / "v1.0.0") is None
