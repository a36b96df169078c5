"""An interrupted `harkd run` resumes: finished (seed, fold) units are kept in OUT/.units/ and not trained again."""

import json

import pytest

import harkd.experiment.fold_unit as fold_unit
from conftest import run_config
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config
from harkd.experiment.runner import run_experiment


class Interrupted(Exception):
    """Stands for a killed run (pytest treats a real KeyboardInterrupt as the user stopping the tests)."""


TRAIN_UNIT = fold_unit.FoldRunner.run
TWO_FOLDS = {"kind": "loso", "val_subjects": 1, "folds": ["S01", "S02"]}


def _count_units(monkeypatch, fail_at: int | None = None) -> list:
    """Record the (seed, fold) of every unit trained; raise instead of training unit number `fail_at`."""
    trained = []

    def run(self, seed, fold):
        if len(trained) == fail_at:
            raise Interrupted
        trained.append((seed, fold.name))
        return TRAIN_UNIT(self, seed, fold)

    monkeypatch.setattr(fold_unit.FoldRunner, "run", run)
    return trained


def test_an_interrupted_run_resumes_with_the_missing_units_only(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    cfg = parse_config(run_config(split=TWO_FOLDS, methods=["none", "logit"]))
    out = tmp_path / "out"
    trained = _count_units(monkeypatch, fail_at=1)
    with pytest.raises(Interrupted):
        run_experiment(cfg, out, command="t", log=lambda _: None)
    assert trained == [(0, "loso-S01")]
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    assert sorted(p.name for p in (out / ".units").iterdir()) == ["run.json", "seed0-loso-S01.json"]

    trained = _count_units(monkeypatch)
    lines = []
    resumed = run_experiment(cfg, out, command="t", log=lines.append)
    assert trained == [(0, "loso-S02")]
    assert any("resuming: 1 of 2 (seed, fold) units" in line for line in lines)
    assert any(line.startswith("[2/2, ") and "seed 0 loso-S02" in line for line in lines)  # counts resumed units
    assert resumed["resumed_units"] == 1 and not (out / ".units").exists()
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["rows"] == resumed["rows"]

    trained = _count_units(monkeypatch)
    fresh = run_experiment(cfg, tmp_path / "fresh", command="t", log=lambda _: None)
    assert trained == [(0, "loso-S01"), (0, "loso-S02")] and fresh["resumed_units"] == 0
    timings = ("train_time_s", "latency_ms_cpu")  # the only fields that may differ
    assert [{k: v for k, v in r.items() if k not in timings} for r in resumed["rows"]] == \
        [{k: v for k, v in r.items() if k not in timings} for r in fresh["rows"]]
    assert resumed["confusion"] == fresh["confusion"]


def test_a_partial_run_of_another_config_is_a_one_line_error(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    out = tmp_path / "out"
    _count_units(monkeypatch, fail_at=1)
    with pytest.raises(Interrupted):
        run_experiment(parse_config(run_config(split=TWO_FOLDS, methods=["none"])), out, command="t",
                       log=lambda _: None)
    with pytest.raises(HarkdError) as error:
        run_experiment(parse_config(run_config(split=TWO_FOLDS, methods=["none", "logit"])), out, command="t",
                       log=lambda _: None)
    message = str(error.value)
    assert ".units holds the finished units of a run with another config" in message and "\n" not in message
    assert not (out / "results.json").exists()
