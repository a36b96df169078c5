import numpy as np
import pytest

from harkd.data.loaders.generic import load_generic, write_generic
from harkd.data.synthetic import make_recordings
from harkd.errors import HarkdError


def test_same_seed_same_arrays_other_seed_differs():
    a, b = make_recordings(seed=3), make_recordings(seed=3)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.signals, rb.signals)
        np.testing.assert_array_equal(ra.labels, rb.labels)
    c = make_recordings(seed=4)
    assert not np.array_equal(a[0].signals, c[0].signals)
    assert not np.array_equal(a[0].labels, c[0].labels)


def test_shapes_names_and_channel_specs():
    recs = make_recordings(n_subjects=3, sessions_per_subject=2, n_classes=4, duration_s=30, rate_hz=25,
                           positions=("right_wrist", "left_wrist", "torso"), modalities=("acc", "capacitive"))
    assert [(r.subject, r.session) for r in recs] == [(f"S0{s}", f"s{j}") for s in (1, 2, 3) for j in (1, 2)]
    rec = recs[0]
    assert rec.signals.shape == (750, 3 * (3 + 2)) and rec.signals.dtype == np.float32
    assert rec.rate_hz == 25 and np.isfinite(rec.signals).all()
    assert [c.name for c in rec.channels[:5]] == ["right_wrist/acc/x", "right_wrist/acc/y", "right_wrist/acc/z",
                                                  "right_wrist/capacitive/1", "right_wrist/capacitive/2"]
    assert {c.position for c in rec.channels} == {"right_wrist", "left_wrist", "torso"}
    assert {(c.modality, c.unit) for c in rec.channels} == {("acc", "m/s^2"), ("capacitive", "pF")}
    assert rec.class_names == ("class_0", "class_1", "class_2", "class_3", "null") and rec.null_class == 4
    # Sessions of one subject differ; all recordings share one channel layout.
    assert not np.array_equal(recs[0].signals, recs[1].signals)
    assert all(r.channels == rec.channels for r in recs)


def test_quaternions_stay_unit_and_no_null_without_null_fraction():
    rec = make_recordings(n_subjects=1, modalities=("quat", "gyro"), null_fraction=0)[0]
    assert rec.null_class is None and "null" not in rec.class_names
    quat = rec.select("modality=quat;position=left_wrist").signals
    np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1, atol=1e-5)


def test_every_class_present_in_segments_of_seconds():
    for rec in make_recordings(n_classes=6, null_fraction=0.1):
        counts = np.bincount(rec.labels, minlength=len(rec.class_names))
        assert (counts > 0).all()
        assert counts[rec.null_class] / len(rec.labels) == pytest.approx(0.1, abs=0.01)
        starts = np.flatnonzero(np.diff(rec.labels, prepend=-1))
        lengths = np.diff(np.append(starts, len(rec.labels))) / rec.rate_hz
        runs = rec.labels[starts]
        active = lengths[runs != rec.null_class]
        assert active.min() >= 1.0 and active.max() <= 8.0
        # Null stretches separate the activities: no two activity runs touch.
        assert not np.any((runs[1:] != rec.null_class) & (runs[:-1] != rec.null_class))
        assert rec.labelled_segments() == len(active)


def test_rejects_impossible_requests():
    with pytest.raises(HarkdError, match="modalities"):
        make_recordings(modalities=("acc", "sonar"))
    with pytest.raises(HarkdError, match="cannot hold"):
        make_recordings(n_classes=10, duration_s=5)
    with pytest.raises(HarkdError, match="null_fraction"):
        make_recordings(null_fraction=1.0)


def _window_features(rec, length):
    """Mean and std per channel over half-overlapping windows that hold one activity label."""
    feats, labels = [], []
    for start in range(0, len(rec.labels) - length + 1, length // 2):
        window = rec.labels[start:start + length]
        if (window == window[0]).all() and window[0] != rec.null_class:
            x = rec.signals[start:start + length]
            feats.append(np.concatenate([x.mean(axis=0), x.std(axis=0)]))
            labels.append(window[0])
    return np.array(feats), np.array(labels)


def test_classes_separable_across_subjects():
    n_classes = 5
    recs = make_recordings(n_subjects=4, n_classes=n_classes, seed=0)
    length = int(2 * recs[0].rate_hz)
    train = [_window_features(r, length) for r in recs[:3]]
    x_train, y_train = np.concatenate([f for f, _ in train]), np.concatenate([y for _, y in train])
    x_test, y_test = _window_features(recs[3], length)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(n_classes)])
    predicted = np.argmin(((x_test[:, None] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    assert len(y_test) >= 20
    assert (predicted == y_test).mean() > 2 / n_classes


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_generic_round_trip(tmp_path, fmt):
    recs = make_recordings(n_subjects=2, sessions_per_subject=2, duration_s=20,
                           modalities=("acc", "quat", "capacitive"), seed=1)
    recs[0].annotations["box"] = np.arange(len(recs[0].labels)) // 100
    for r in recs[1:]:
        r.annotations["box"] = np.zeros(len(r.labels), np.int64)
    write_generic(recs, tmp_path / "export", fmt=fmt)
    loaded = load_generic(tmp_path / "export")
    assert len(loaded) == len(recs)
    for original, back in zip(recs, loaded):
        np.testing.assert_array_equal(back.signals, original.signals)  # float32 survives text and Parquet exactly
        np.testing.assert_array_equal(back.labels, original.labels)
        np.testing.assert_array_equal(back.annotations["box"], original.annotations["box"])
        assert back.channels == original.channels
        assert back.class_names == original.class_names and back.null_class == original.null_class
        assert (back.subject, back.session, back.rate_hz) == (original.subject, original.session, original.rate_hz)
        assert back.interpolated_samples == 0
