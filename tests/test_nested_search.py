"""`harkd search-sensors --nested` on synthetic data: each outer fold's search never reads a window of that fold's
test workers (a spy on every fold's windows the search normalises, trains and scores on), its choices are scored on
them, the report gives the figure, and a rerun trains nothing."""

import numpy as np
import pytest

from conftest import sensor_search_config
from harkd.errors import HarkdError
from harkd.search import search_folds, sensor_search
from harkd.search.sensor_report import run_sensor_search
from harkd.search.sensor_search import parse_sensor_search


@pytest.fixture()
def planted_env(planted_root, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(planted_root))
    return planted_root


def spy_on_windows(monkeypatch):
    """Every fold whose windows the search or its teachers read: (fold name, split, subjects of its windows)."""
    seen = []

    def recording(real):
        def fold_views(view, fold, normaliser=None):
            for split in ("train", "val", "test", "calibration"):
                seen.append((fold.name, split, set(np.unique(view.subjects[getattr(fold, split)]).tolist())))
            return real(view, fold, normaliser)
        return fold_views

    for module in (sensor_search, search_folds):
        monkeypatch.setattr(module, "fold_views", recording(module.fold_views))
    return seen


def nested_config():
    raw = sensor_search_config(trials=3, budget={"positions": 1}, modalities=["gyro"])
    raw["split"]["folds"] = ["S01", "S02"]  # two outer folds; each searches over the three other workers
    return parse_sensor_search(raw)


def test_an_outer_folds_workers_never_enter_its_search(planted_env, tmp_path, monkeypatch):
    seen = spy_on_windows(monkeypatch)
    log = []
    results = run_sensor_search(nested_config(), tmp_path / "out", "planted", nested=True, log=log.append)
    for outer in ("S01", "S02"):
        inner = [(name, split, subjects) for name, split, subjects in seen if name.startswith(f"loso-{outer}/")]
        others = [s for s in ("S01", "S02", "S03", "S04") if s != outer]
        assert {name for name, _, _ in inner} == {f"loso-{outer}/{s}" for s in others[:2]}  # scoring.workers: 2
        assert all(outer not in subjects for _, _, subjects in inner)  # students' train, val and scored windows
        teacher = [subjects for name, split, subjects in seen if name == f"loso-{outer}" and split in ("train", "val")]
        assert teacher and all(outer not in subjects for subjects in teacher)  # the teacher the inner folds distil
    (row,) = results["nested"]  # one number of positions
    assert row["outer_folds"] == 2 and [c["test_subjects"] for c in row["choices"]] == [["S01"], ["S02"]]
    assert row["test_mean"] == pytest.approx(np.mean([c["test_score"] for c in row["choices"]]))
    assert row["agree"] == max(sum(c["kit"] == k for c in row["choices"]) for k in {c["kit"] for c in row["choices"]})
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## On workers the search never saw (--nested)" in report
    assert f"| 1 | {100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f} |" in report
    # a rerun reads every outer study and outer score back: no window is normalised again, no teacher trained
    seen.clear()
    again = run_sensor_search(nested_config(), tmp_path / "out", "planted", nested=True, log=log.append)
    assert again["nested"] == results["nested"] and not seen


def test_a_group_split_cannot_be_nested(planted_env, tmp_path):
    raw = sensor_search_config(trials=1, budget={"positions": 1}, modalities=["gyro"])
    raw["split"] = {"kind": "groups", "group_by": "trial", "n_folds": 2}
    with pytest.raises(HarkdError, match="--nested: a group split tests every worker in every fold"):
        run_sensor_search(parse_sensor_search(raw), tmp_path / "out", "planted", nested=True, log=lambda _: None)
