"""harkd run end to end on a small synthetic dataset in the generic format, and the frozen-teacher contract."""

import json
import re

import pytest
import torch
import yaml

from conftest import assert_one_line_error, run_cli, run_config, spy_fit
from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.experiment.config import MethodSpec, load_config, parse_config
from harkd.experiment.runner import Runner, run_experiment
from harkd.models.base import build_model
from harkd.train.engine import TrainConfig, fit, predict

def test_run_writes_one_row_per_fold_seed_role_model_method(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    monkeypatch.setattr(Runner, "heartbeat_s", 0.01)  # a line whenever the run was silent this long
    lines, threads = [], torch.get_num_threads()
    results = run_experiment(parse_config(run_config()), tmp_path / "out", command="test", log=lines.append)
    assert torch.get_num_threads() == threads  # the run's one thread was this process's only while it trained
    # What the process trains at that moment: the unit, the fit (teacher, semantic, <student>-<method>), its epoch.
    fits = {"teacher", "semantic"} | {f"cnn_student-{m}" for m in ("none", "logit", "sc_logit", "combi_rep")}
    beats = [re.search(r"\] training loso-S01-seed0: (\S+), epoch ([12])/2$", line) for line in lines]
    assert any(beats) and all(b[1] in fits for b in beats if b), lines
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["rows"] == results["rows"]
    env = on_disk["environment"]  # what a rerun elsewhere needs to know to compare its figures
    assert env["versions"]["torch"] == torch.__version__ and env["threads_per_process"] == 1
    assert env["versions"]["numpy"] and env["cpu"] and env["python"]
    roles = [(r["role"], r["method"]) for r in results["rows"]]
    assert roles == [("teacher", "-"), ("semantic", "-"), ("student", "none"), ("student", "logit"),
                     ("student", "sc_logit"), ("student", "combi_rep")]
    required = {"dataset", "fold", "seed", "role", "method", "channels", "macro_f1", "accuracy", "params", "flops",
                "latency_ms_cpu"}
    for row in results["rows"]:
        assert required <= row.keys()
        assert 0.0 <= row["macro_f1"] <= 1.0 and row["params"] > 0 and row["flops"] > 0
        assert row["fold"] == "loso-S01"
    student, teacher = results["rows"][2], results["rows"][0]
    assert student["n_channels"] == 3 and teacher["n_channels"] > student["n_channels"]
    assert on_disk["best_per_family"]["families"] == {
        "cnn_student": {"none": "none", "logit": "zoo", "sc_logit": "tsak", "combi_rep": "tsak"}}
    assert "## Best method per family" in (tmp_path / "out" / "report.md").read_text()
    assert not list((tmp_path / "out").glob(".staging-*"))


def test_unknown_names_and_keys_are_one_line_errors(tmp_path):
    with pytest.raises(HarkdError, match=r"unknown key\(s\) \['epoch'\]; valid keys"):
        parse_config(run_config(teacher={"model": "tsak_teacher", "train": {"epoch": 3}}))
    with pytest.raises(HarkdError, match=r"unknown key\(s\) \['studnets'\]"):
        parse_config({**run_config(), "studnets": {}})
    with pytest.raises(HarkdError, match="unknown model 'resnet'; known models:"):
        build_model("resnet", 3, 2)
    with pytest.raises(HarkdError, match="unknown KD strategy 'fitnet'"):
        build_method(MethodSpec.parse("fitnet", "methods[0]"), {"feat": 8}, {"attn": 8}, 3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(run_config()))
    with pytest.raises(HarkdError, match=r"split.kind: expected 'loso', 'fixed', 'protocol' or 'groups', got 'kfold'"):
        load_config(path, ["split.kind=kfold"])


def test_teacher_gets_no_gradient_and_stays_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 6, 50), torch.randint(0, 3, (64,))
    teacher = build_model("tsak_teacher", 6, 3, [[0, 1, 2], [3, 4, 5]])
    teacher.eval().requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    targets = predict(teacher, x)
    assert not targets.logits.requires_grad
    student = build_model("cnn_student", 3, 3)
    distiller = build_method(MethodSpec.parse("tsak_all", "m"), student.rep_dims, teacher.rep_dims, 3)
    targets.head_logits["semantic"] = targets.logits.clone()
    fit(student, (x[:, :3], y), (x[:48, :3], y[:48]), TrainConfig(epochs=1, batch_size=16), tmp_path, seed=0,
        distiller=distiller, teacher={"train": targets})
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_cli_run_rejects_an_unknown_method_before_training(data_root, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(run_config()))
    result = run_cli("run", str(path), "methods=[none,fitnet]", "--out", str(tmp_path / "out"), data_root=data_root)
    assert_one_line_error(result, "unknown KD strategy 'fitnet'", "known strategies: at, attn_rep")
    assert not (tmp_path / "out").exists()
    result = run_cli("run", str(path), "teacher.params={depth: 3}", "--out", str(tmp_path / "out"), data_root=data_root)
    assert_one_line_error(result, "model tsak_teacher: unknown option(s) ['depth']")


def test_two_sizes_of_one_student_are_reported_apart():
    cfg = parse_config(run_config(students={"models": [{"model": "cnn_student", "params": {"width": 64}},
                                                       "cnn_student"]}))
    assert [s.label for s in cfg.students] == ["cnn_student(width=64)", "cnn_student"]
    with pytest.raises(HarkdError, match="share the label"):
        parse_config(run_config(students={"models": ["cnn_student", {"model": "cnn_student", "label": "cnn_student"}]}))


def test_parallel_units_give_the_serial_rows_in_plan_order(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    cfg = parse_config(run_config(split={"kind": "loso", "val_subjects": 1}, methods=["none", "logit"]))
    serial = run_experiment(cfg, tmp_path / "serial", command="test", log=lambda _: None)
    parallel = run_experiment(cfg, tmp_path / "parallel", command="test", log=lambda _: None, jobs=2,
                              keep_models=True)
    key = lambda r: (r["fold"], r["seed"], r["role"], r["model"], r["method"])  # noqa: E731
    assert [key(r) for r in parallel["rows"]] == [key(r) for r in serial["rows"]]
    assert [r["fold"] for r in serial["rows"] if r["role"] == "teacher"] == ["loso-S01", "loso-S02", "loso-S03"]
    assert parallel["environment"]["threads_per_process"] == 1 and parallel["jobs"] == 2
    # Same seeds, same data: the scores agree (one torch thread per worker may round differently in the last bits).
    for a, b in zip(serial["rows"], parallel["rows"]):
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=0.02), key(a)
    # Confusion matrices sum over the units: every window is a test window exactly once over the LOSO folds.
    totals = {key: sum(map(sum, matrix)) for key, matrix in parallel["confusion"].items()}
    assert len(set(totals.values())) == 1 and set(totals) == {"teacher/tsak_teacher/-", "semantic/tsak_semantic/-",
                                                               "student/cnn_student/none", "student/cnn_student/logit"}
    assert parallel["jobs"] == 2 and all(r["latency_ms_cpu"] > 0 for r in parallel["rows"])
    # Worker processes keep their units' models too (harkd run --jobs 2 --keep-models).
    kept = sorted(str(p.relative_to(tmp_path / "parallel" / "models")) for p in
                  (tmp_path / "parallel" / "models").glob("*/*.pt"))
    assert kept == [f"loso-{s}-seed0/{name}" for s in ("S01", "S02", "S03") for name in
                    ("student-cnn_student-logit.pt", "student-cnn_student-none.pt", "teacher.pt")]
    assert not (tmp_path / "serial" / "models").exists()


def test_calibration_windows_train_only_kd_students_and_are_never_scored(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    calls = spy_fit(monkeypatch)
    plain = run_experiment(parse_config(run_config(methods=["none", "sc_logit"])), tmp_path / "plain", command="t",
                           log=lambda _: None)
    n_train_plain = len(calls[0]["train"][1])
    calls.clear()
    split = {"kind": "loso", "val_subjects": 1, "folds": ["S01"], "calibration": 0.5}
    calibrated = run_experiment(parse_config(run_config(split=split, methods=["none", "sc_logit"])), tmp_path / "cal",
                                command="t", log=lambda _: None)
    seen = [(type(c["model"]).__name__, c["targets"] is not None, len(c["train"][1]), int((c["train"][1] < 0).sum()))
            for c in calls]
    (teacher, _, _, _), (_, _, semantic_n, _), none, kd = seen
    assert teacher == "TSAKTeacher" and semantic_n == n_train_plain
    assert none == ("CNNStudent", False, n_train_plain, 0)
    n_scored = sum(map(sum, calibrated["confusion"]["student/cnn_student/none"]))
    n_scored_plain = sum(map(sum, plain["confusion"]["student/cnn_student/none"]))
    n_calibration = kd[3]
    assert kd[:3] == ("CNNStudent", True, n_train_plain + n_calibration) and n_calibration > 0
    assert n_scored + n_calibration == n_scored_plain


def test_a_finished_run_is_replaced_only_with_overwrite(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": "run"}')
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(run_config(methods=["none"])))
    refused = run_cli("run", str(path), "--out", str(out), data_root=data_root)
    assert_one_line_error(refused, f"{out} holds a finished run (results.json)", "--overwrite")
    assert (out / "results.json").read_text() == '{"earlier": "run"}'
    quick = {"epochs": 1, "batch_size": 32, "patience": 1}
    cfg = parse_config(run_config(methods=["none"], teacher={"model": "cnn_student", "train": quick}))
    run_experiment(cfg, out, command="t", log=lambda _: None, overwrite=True)
    assert json.loads((out / "results.json").read_text())["rows"]
