import numpy as np
import pytest

from harkd.data.recording import Recording, sensor_channels
from harkd.data.registry import WindowConfig
from harkd.data.splits import (Fold, Normaliser, fit_normaliser, fixed_split, group_folds, leave_one_subject_out,
                               with_calibration)
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError

CHANNELS = tuple(sensor_channels("right_wrist", "acc", "g"))


@pytest.fixture()
def windows():
    rng = np.random.default_rng(0)
    recs = [Recording(rng.normal(loc=10 * i, scale=i + 1, size=(200, 3)), CHANNELS, rng.integers(0, 3, 200),
                      ("a", "b", "c"), f"s{i}", "x", 50.0) for i in range(5)]
    return make_windows(recs, WindowConfig(20, 10))


def test_loso_never_shares_a_subject_between_train_val_and_test(windows):
    folds = leave_one_subject_out(windows, val_subjects=1, seed=3)
    assert [f.test_subjects for f in folds] == [(s,) for s in windows.subject_ids]
    for fold in folds:
        train, val, test = (set(windows.subjects[i]) for i in (fold.train, fold.val, fold.test))
        assert train and val and test
        assert not (train & test) and not (val & test) and not (train & val)
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(windows)


def test_validation_falls_back_to_a_window_fraction_with_one_training_subject(windows):
    two = windows.subset(np.flatnonzero(np.isin(windows.subjects, ["s0", "s1"])))
    fold = fixed_split(two, ["s1"], val_subjects=1, val_fraction=0.25, seed=0)
    assert set(two.subjects[fold.val]) == {"s0"} and set(two.subjects[fold.test]) == {"s1"}
    assert len(fold.val) == round(0.25 * (len(fold.val) + len(fold.train)))
    assert not set(fold.val) & set(fold.train)


def test_fixed_split_rejects_unknown_and_overlapping_subjects(windows):
    with pytest.raises(HarkdError, match=r"unknown test subject\(s\) \['s9'\]"):
        fixed_split(windows, ["s9"])
    with pytest.raises(HarkdError, match="both train and test"):
        fixed_split(windows, ["s1"], ["s1", "s2"])


def test_normaliser_is_fit_on_training_windows_only(windows):
    fold = leave_one_subject_out(windows)[0]
    norm = fit_normaliser(windows, fold)
    train = windows.x[fold.train]
    np.testing.assert_allclose(norm.mean, train.mean(axis=(0, 2)), rtol=1e-5)
    np.testing.assert_allclose(norm.std, train.std(axis=(0, 2)), rtol=1e-5)
    # Changing every validation and test window leaves the statistics untouched.
    poisoned = windows.subset(np.arange(len(windows)))
    poisoned.x = poisoned.x.copy()
    poisoned.x[np.concatenate([fold.val, fold.test])] = 1e6
    again = fit_normaliser(poisoned, fold)
    np.testing.assert_array_equal(again.mean, norm.mean)
    np.testing.assert_array_equal(again.std, norm.std)
    assert np.abs(norm(train).mean(axis=(0, 2))).max() < 1e-3


def test_constant_channels_are_centred_not_divided_by_zero():
    x = np.zeros((4, 2, 5), dtype=np.float32)
    x[:, 1] = np.arange(4)[:, None]
    norm = Normaliser.fit(x)
    assert norm.std[0] == 1.0 and np.isfinite(norm(x)).all()


def test_group_folds_test_each_box_once_within_every_session():
    rng = np.random.default_rng(0)
    recs = []
    for subject in ("u1", "u2"):
        box = np.repeat([-1, 1, 2, 3, 4, 5, 6], 40)
        recs.append(Recording(rng.normal(size=(len(box), 3)), CHANNELS, rng.integers(0, 3, len(box)), ("a", "b", "c"),
                              subject, "S1", 50.0, annotations={"box": box}))
    windows = make_windows(recs, WindowConfig(20, 20))
    folds = group_folds(windows, "box", n_folds=3, seed=0)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == sorted(np.flatnonzero(windows.annotations["box"] >= 0).tolist())
    for fold in folds:
        box = windows.annotations["box"]
        test_keys, train_keys = (set(zip(windows.sessions[part], windows.subjects[part], box[part]))
                                 for part in (fold.test, fold.train))
        assert not test_keys & train_keys
        assert set(windows.subjects[fold.test]) == {"u1", "u2"}  # within-session: both subjects on both sides
        assert -1 not in windows.annotations["box"][np.concatenate([fold.train, fold.val, fold.test])]
    assert {b for b in windows.annotations["box"][folds[0].test]} == {1, 4}
    with pytest.raises(HarkdError, match="unknown annotation 'crate'"):
        group_folds(windows, "crate")


def segmented_windows():
    """DSADS-like: per subject, recordings a01 and a02, each cut into 4 one-window segments "aXX/sYY", stored
    out of time order; labels deliberately not in time order either."""
    recs = []
    for subject in ("p1", "p2"):
        for activity, label in (("a01", 0), ("a02", 1)):
            for segment in (3, 1, 4, 2):
                x = np.full((20, 3), float(segment))
                recs.append(Recording(x, CHANNELS, np.full(20, (label + segment) % 2), ("a", "b"), subject,
                                      f"{activity}/s{segment:02d}", 50.0))
    return make_windows(recs, WindowConfig(20, 20))


def test_calibration_takes_the_first_part_in_time_of_every_test_recording():
    windows = segmented_windows()
    fold = leave_one_subject_out(windows, val_subjects=0, val_fraction=0.5)[1]
    calibrated = with_calibration(windows, fold, 0.5)
    sessions = lambda idx: sorted(str(s) for s in windows.sessions[idx])  # noqa: E731
    assert sessions(calibrated.calibration) == ["a01/s01", "a01/s02", "a02/s01", "a02/s02"]
    assert sessions(calibrated.test) == ["a01/s03", "a01/s04", "a02/s03", "a02/s04"]
    assert set(windows.subjects[calibrated.calibration]) == {"p2"}
    assert np.array_equal(np.sort(np.concatenate([calibrated.test, calibrated.calibration])), fold.test)
    assert np.array_equal(calibrated.train, fold.train) and "+ 4 unlabelled calibration" in calibrated.describe()
    with pytest.raises(HarkdError, match=r"calibration \(split.calibration, or personalise's --calibration\) must be "
                                         r"a fraction in \(0, 1\), got 1.0"):
        with_calibration(windows, fold, 1.0)


def test_a_session_without_segments_is_split_in_time_within_itself(windows):
    fold = fixed_split(windows, ["s2"], val_subjects=1)
    calibrated = with_calibration(windows, fold, 0.25)
    n = len(fold.test)
    assert np.array_equal(calibrated.calibration, fold.test[:round(0.25 * n)])
    assert np.array_equal(calibrated.test, fold.test[round(0.25 * n):])


def test_segments_named_by_their_first_sample_are_ordered_by_value():
    """UCI-HAR's recut names each segment by its sample range ("exp03/298-1398"): 11704 comes after 298 in time,
    though not as text."""
    recs = [Recording(np.full((20, 3), float(start)), CHANNELS, np.zeros(20, dtype=int), ("a", "b"), "p1",
                      f"exp03/{start}-{start + 19}", 50.0) for start in (11704, 298, 2770, 1686)]
    windows = make_windows(recs, WindowConfig(20, 20))
    whole = Fold("w", np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.arange(4), ("p1",))
    calibrated = with_calibration(windows, whole, 0.5)
    assert sorted(windows.x[calibrated.calibration, 0, 0].tolist()) == [298.0, 1686.0]
