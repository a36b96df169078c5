import numpy as np
import pytest

from harkd.data.recording import ChannelQuery, ChannelSpec, Recording, fill_short_gaps, sensor_channels
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows, window_labels
from harkd.errors import HarkdError

CHANNELS = tuple(sensor_channels("right_wrist", "acc", "g") + sensor_channels("left_wrist", "gyro", "dps"))


def recording(labels, subject="s1", null_class=None, box=None):
    labels = np.asarray(labels)
    signals = np.arange(len(labels) * len(CHANNELS), dtype=np.float32).reshape(len(labels), len(CHANNELS))
    annotations = {} if box is None else {"box": np.asarray(box)}
    return Recording(signals, CHANNELS, labels, ("a", "b", "null"), subject, "sess", 10.0, null_class, annotations)


def test_windows_are_slices_of_the_signal_channels_first():
    rec = recording([0] * 10)
    ws = make_windows([rec], WindowConfig(length=4, stride=3))
    assert ws.x.shape == (3, 6, 4)  # starts 0, 3, 6
    np.testing.assert_array_equal(ws.x[1], rec.signals[3:7].T)


def test_majority_and_centre_label_rules_differ_where_they_should():
    labels = [0, 0, 0, 1, 1]  # majority a, centre (index 2) a; shifted window: majority b
    assert window_labels(np.array(labels), np.array([0]), 5, 3, "majority").tolist() == [0]
    labels = [1, 1, 0, 0, 0, 1]
    assert window_labels(np.array(labels), np.array([0]), 4, 3, "majority").tolist() == [0]  # tie 2:2 -> lower
    assert window_labels(np.array(labels), np.array([0]), 4, 3, "centre").tolist() == [0]
    assert window_labels(np.array(labels), np.array([0, 1]), 5, 3, "centre").tolist() == [0, 0]
    assert window_labels(np.array([0, 1, 1, 1, 0]), np.array([0]), 5, 3, "majority").tolist() == [1]


def test_null_windows_dropped_or_kept():
    rec = recording([2] * 4 + [0] * 4, null_class=2)
    assert make_windows([rec], WindowConfig(4, 4, drop_null=True)).y.tolist() == [0]
    assert make_windows([rec], WindowConfig(4, 4, drop_null=False)).y.tolist() == [2, 0]


def test_annotations_follow_the_window_centre():
    rec = recording([0] * 8, box=[1, 1, 1, 1, 2, 2, 2, 2])
    ws = make_windows([rec], WindowConfig(4, 2))
    assert ws.annotations["box"].tolist() == [1, 2, 2]


def test_channel_query_selects_by_position_and_modality_and_lists_what_exists():
    ws = make_windows([recording([0] * 8)], WindowConfig(4, 4))
    student = ws.select({"position": "right_wrist", "modality": ["acc"]})
    assert [c.name for c in student.channels] == ["right_wrist/acc/x", "right_wrist/acc/y", "right_wrist/acc/z"]
    np.testing.assert_array_equal(student.x, ws.x[:, :3])
    assert ChannelQuery.parse("position=left_wrist").indices(CHANNELS) == [3, 4, 5]
    with pytest.raises(HarkdError, match=r"unknown position\(s\) \['torso'\]; this data has: \['left_wrist'"):
        ws.select({"position": "torso"})
    with pytest.raises(HarkdError, match="matches no channel"):
        ws.select({"position": "left_wrist", "modality": "acc"})
    with pytest.raises(HarkdError, match="unknown key"):
        ChannelQuery.parse({"positon": "x"})


def test_recordings_with_different_channels_cannot_be_windowed_together():
    other = Recording(np.zeros((8, 1)), (ChannelSpec("torso", "acc", "x", "g"),), np.zeros(8, int),
                      ("a", "b", "null"), "s2", "sess", 10.0)
    with pytest.raises(HarkdError, match="channels differ"):
        make_windows([recording([0] * 8), other], WindowConfig(4, 4))


def test_short_gaps_interpolated_long_gaps_named():
    x = np.arange(20, dtype=float).reshape(10, 2)
    x[3:5, 1] = np.nan
    filled, n = fill_short_gaps(x, rate_hz=2.0, where="f.csv", max_gap_s=1.0)
    assert n == 2
    np.testing.assert_allclose(filled[:, 1], np.arange(10) * 2 + 1)
    x[2:6, 0] = np.nan
    with pytest.raises(HarkdError, match=r"f.csv: rows 4-7: column 0 is missing \(NaN\) for 4 samples, "
                                         r"more than the 2 "):
        fill_short_gaps(x, rate_hz=2.0, where="f.csv", max_gap_s=1.0, first_row=2)
