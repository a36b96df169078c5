"""Acceptance counts on the real archives in ../shared/datasets, through the installed CLI."""

import json

import numpy as np
import pytest

from conftest import run_cli
from harkd.data import catalog
from harkd.data.catalog import load_recordings, load_windows
from harkd.data.splits import fit_normaliser, leave_one_subject_out


def info(name, root):
    return json.loads(run_cli("data", "info", name, "--json", data_root=root, check=True).stdout)


def test_dsads_counts(installed_root):
    d = info("dsads", installed_root)
    assert (d["n_subjects"], d["n_classes"], d["n_channels"]) == (8, 19, 45)
    assert d["recordings"] == d["labelled_segments"] == d["windows"] == 9120
    assert d["positions"] == ["left_arm", "left_leg", "right_arm", "right_leg", "torso"]
    assert d["modalities"] == ["acc", "gyro", "mag"]
    assert all(c["windows"] == 480 for c in d["classes"])
    assert d["duration_s"] == pytest.approx(9120 * 5.0)


def test_hapt_counts(installed_root):
    d = info("hapt", installed_root)
    assert (d["n_subjects"], d["labelled_segments"], d["n_channels"]) == (30, 1214, 6)
    assert d["recordings"] == 61 and d["n_classes"] == 12
    assert d["modalities"] == ["acc", "gyro"]


def test_uci_har_protocol_counts_beside_the_original(installed_root):
    out = run_cli("data", "info", "hapt", "--json", "--protocol", "uci-har", data_root=installed_root, check=True)
    splits = json.loads(out.stdout)["protocol"]["splits"]
    assert splits["train"] == {"windows": 7415, "subjects": 21, "original_windows": 7352}
    assert splits["test"] == {"windows": 2996, "subjects": 9, "original_windows": 2947}


def test_openpack_counts(installed_root):
    d = info("openpack", installed_root)
    assert d["n_subjects"] == 2 and d["sensors"] == ["atr01", "atr02", "atr03", "atr04"]
    assert d["n_classes"] == 10
    for subject in d["subjects"]:
        assert len(subject["classes_present"]) == 10, subject


def test_windows_come_from_the_cache_the_second_time(installed_root, monkeypatch):
    info("dsads", installed_root)  # `data info` writes the default windows' cache (this test may run first, or alone)
    assert list((installed_root / ".cache").glob("dsads-windows-*.npz"))
    monkeypatch.setattr(catalog, "make_windows",
                        lambda *_, **__: pytest.fail("windowed again, not read from the cache"))
    first = load_windows("dsads", root=installed_root)
    monkeypatch.undo()
    fresh = load_windows("dsads", root=installed_root, cache=False)
    np.testing.assert_array_equal(first.x, fresh.x)
    np.testing.assert_array_equal(first.y, fresh.y)
    np.testing.assert_array_equal(first.subjects, fresh.subjects)
    assert first.channels == fresh.channels and first.class_names == fresh.class_names


def test_dsads_loso_folds_are_subject_disjoint_and_normalised_on_train_only(installed_root):
    windows = load_windows("dsads", root=installed_root)
    folds = leave_one_subject_out(windows, seed=0)
    assert len(folds) == 8
    for fold in folds:
        test_subjects = set(windows.subjects[fold.test])
        assert test_subjects == set(fold.test_subjects)
        assert not test_subjects & set(windows.subjects[np.concatenate([fold.train, fold.val])])
    norm = fit_normaliser(windows, folds[0])
    np.testing.assert_allclose(norm.mean, windows.x[folds[0].train].mean(axis=(0, 2)), rtol=1e-4, atol=1e-5)


def test_recordings_cache_round_trips(installed_root):
    a = load_recordings("openpack", root=installed_root)
    b = load_recordings("openpack", root=installed_root, cache=False)
    assert [(r.subject, r.session, r.channels) for r in a] == [(r.subject, r.session, r.channels) for r in b]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.signals, rb.signals)
        np.testing.assert_array_equal(ra.labels, rb.labels)
        assert ra.annotations.keys() == rb.annotations.keys()
