"""The store of trained teachers: a run that varies only students and methods trains no teacher again, and every row
is the same with and without the store; anything that shapes a teacher is another key."""

import json

import pytest
import torch

import harkd.experiment.teacher_cache as teacher_cache
from conftest import run_cli, run_config, spy_fit
from harkd.experiment.config import parse_config
from harkd.experiment.runner import run_experiment
from harkd.experiment.teacher import TeacherSettings
from harkd.experiment.teacher_cache import TeacherStore, teacher_key
from harkd.train.engine import TrainConfig

MEASURED = {"latency_ms_cpu", "train_time_s"}  # measured each run, not computed


def _rows(results):
    return {(r["role"], r["model"], r["method"]): {k: v for k, v in r.items() if k not in MEASURED}
            for r in results["rows"]}


def test_a_rerun_with_one_more_method_trains_no_teacher_and_every_row_is_the_same(data_root, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    store, quiet = TeacherStore(tmp_path / "teachers"), (lambda _: None)
    config = parse_config(run_config(methods=["none", "logit"]))
    plain = _rows(run_experiment(config, tmp_path / "plain", log=quiet))
    filled = _rows(run_experiment(config, tmp_path / "filled", log=quiet, teachers=store))
    assert len(list(store.root.glob("*.pt"))) == 1 and filled == plain  # one fold, one seed
    fits = spy_fit(monkeypatch)
    lines = []
    more = _rows(run_experiment(parse_config(run_config(methods=["none", "logit", "sc_logit"])), tmp_path / "more",
                                log=lines.append, teachers=store))
    assert [f["name"] for f in fits] == ["cnn_student-none", "cnn_student-logit", "cnn_student-sc_logit"]
    assert {k: v for k, v in more.items() if k in plain} == plain and ("student", "cnn_student", "sc_logit") in more
    assert any("(from the teacher store)" in line for line in lines)


def _settings(**train):
    return TeacherSettings(parse_config(run_config()).teacher, TrainConfig(**{"epochs": 2, **train}))


@pytest.mark.parametrize("change", ["seed", "epochs", "inputs", "labels", "code", "groups"])
def test_anything_that_shapes_a_teacher_is_another_key(monkeypatch, change):
    x, y = torch.randn(8, 6, 10), torch.arange(8) % 2
    args = dict(settings=_settings(), tensors=[x, x, y, y], groups=[[0, 1, 2], [3, 4, 5]], n_classes=2, seed=0)
    key = teacher_key(**args)
    assert teacher_key(**args) == key  # the same content, the same key
    if change == "code":
        monkeypatch.setattr(teacher_cache, "code_fingerprint", lambda: "edited")
    else:
        args.update({"seed": dict(seed=1), "epochs": dict(settings=_settings(epochs=3)),
                     "inputs": dict(tensors=[x + 1e-6, x, y, y]), "labels": dict(tensors=[x, x, 1 - y, y]),
                     "groups": dict(groups=[[0, 1], [2, 3, 4, 5]])}[change])
    assert teacher_key(**args) != key


def test_a_damaged_entry_is_trained_again_never_trusted(tmp_path):
    store = TeacherStore(tmp_path)
    (tmp_path / "abc.pt").write_bytes(b"not a teacher")
    assert store.load("abc") is None and store.load("absent") is None


def test_no_teacher_cache_writes_nothing_and_the_default_store_is_found_again(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_TEACHERS", str(tmp_path / "teachers"))
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(run_config(methods=["none"], latency_runs=1)))
    run_cli("run", str(path), "--out", str(tmp_path / "a"), "--no-teacher-cache", data_root=data_root, check=True)
    assert not (tmp_path / "teachers").exists()
    run_cli("run", str(path), "--out", str(tmp_path / "b"), data_root=data_root, check=True)
    again = run_cli("run", str(path), "--out", str(tmp_path / "c"), data_root=data_root, check=True)
    assert len(list((tmp_path / "teachers").glob("*.pt"))) == 1 and "(from the teacher store)" in again.stderr
    rows = [json.loads((tmp_path / run / "results.json").read_text())["rows"] for run in "abc"]
    assert [[{k: v for k, v in r.items() if k not in MEASURED} for r in run] for run in rows[1:]] == \
        [[{k: v for k, v in r.items() if k not in MEASURED} for r in rows[0]]] * 2
