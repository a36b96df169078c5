"""`teacher: self` methods: the student trained alone ("none") is the teacher (self-distillation; with calibration,
self-training on its soft pseudo-labels)."""

import pytest
import torch

from conftest import run_config, spy_fit
from harkd.errors import HarkdError
from harkd.experiment.config import MethodSpec, parse_config
from harkd.experiment.runner import check_names, run_experiment
from harkd.train.engine import predict

SELF_LOGIT = {"name": "self_logit", "teacher": "self", "terms": [{"distiller": "logit"}]}


def test_methods_default_to_the_teacher_and_parse_teacher_self():
    cfg = parse_config(run_config(methods=["none", "logit", SELF_LOGIT]))
    assert [m.teacher for m in cfg.methods] == ["teacher", "teacher", "self"]
    assert cfg.methods[2] == MethodSpec("self_logit", ({"distiller": "logit"},), "self")
    # Any method without terms is the student alone, whatever its name.
    alone = {"name": "alone", "terms": []}
    assert parse_config(run_config(methods=[alone, SELF_LOGIT])).methods[1].teacher == "self"


def test_teacher_self_config_errors_are_one_line_and_name_the_method():
    bad = {**SELF_LOGIT, "teacher": "student"}
    with pytest.raises(HarkdError) as error:
        parse_config(run_config(methods=["none", bad]))
    message = str(error.value)
    assert "methods[1].teacher" in message and "self_logit" in message and "'student'" in message
    assert "valid: teacher, self" in message and "\n" not in message

    with pytest.raises(HarkdError) as error:
        parse_config(run_config(methods=["none", {"name": "self_none", "teacher": "self", "terms": []}]))
    assert "self_none" in str(error.value) and "needs terms" in str(error.value)

    for methods, index in ((["logit", SELF_LOGIT], 1), ([SELF_LOGIT, "none"], 0)):
        with pytest.raises(HarkdError) as error:
            parse_config(run_config(methods=methods))
        message = str(error.value)
        assert f"methods[{index}]" in message and "self_logit" in message and "\n" not in message
        assert "list a method with no terms (none) before it" in message

    valid = r"valid keys: \['mixup', 'name', 'teacher', 'terms'\]"
    with pytest.raises(HarkdError, match=r"unknown key\(s\) \['teachr'\]; " + valid):
        parse_config(run_config(methods=["none", {"name": "x", "teachr": "self", "terms": [{"distiller": "logit"}]}]))


def test_check_names_builds_self_methods_with_the_students_dims():
    def method(teacher, **term):
        return {"name": "fit", "teacher": teacher, "terms": [{"distiller": "fitnets", **term}]}

    # The student has the feature map "feat", the teacher "encoder": which one is the target decides what builds.
    check_names(parse_config(run_config(methods=["none", method("self", teacher_map="feat")])))
    check_names(parse_config(run_config(methods=["none", method("teacher")])))
    with pytest.raises(HarkdError, match="the teacher has no feature map 'encoder'; it has: \\['feat'\\]"):
        check_names(parse_config(run_config(methods=["none", method("self")])))
    with pytest.raises(HarkdError, match="the teacher has no feature map 'feat'"):
        check_names(parse_config(run_config(methods=["none", method("teacher", teacher_map="feat")])))


def test_self_logit_distils_from_the_none_student_on_the_training_windows(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    calls = spy_fit(monkeypatch)
    results = run_experiment(parse_config(run_config(methods=["none", "logit", SELF_LOGIT])), tmp_path / "out",
                             command="t", log=lambda _: None)
    assert [(r["role"], r["method"]) for r in results["rows"]][2:] == [
        ("student", "none"), ("student", "logit"), ("student", "self_logit")]
    assert 0.0 <= results["rows"][-1]["macro_f1"] <= 1.0
    fits = {c["name"]: c for c in calls}
    none, logit, own = fits["cnn_student-none"], fits["cnn_student-logit"], fits["cnn_student-self_logit"]
    assert none["targets"] is None
    assert torch.equal(own["train"][0], none["train"][0])  # no calibration: the same training windows
    expected = predict(none["model"], none["train"][0]).logits
    assert torch.equal(own["targets"]["train"].logits, expected)
    assert not torch.allclose(logit["targets"]["train"].logits, expected)  # not the teacher's targets
    assert own["targets"]["train"].reps.keys() == {"feat"}


def test_with_calibration_self_targets_cover_the_calibration_windows(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    calls = spy_fit(monkeypatch)
    split = {"kind": "loso", "val_subjects": 1, "folds": ["S01"], "calibration": 0.5}
    results = run_experiment(parse_config(run_config(split=split, methods=["none", SELF_LOGIT])), tmp_path / "out",
                             command="t", log=lambda _: None)
    assert [r["method"] for r in results["rows"]][-2:] == ["none", "self_logit"]
    fits = {c["name"]: c for c in calls}
    none, own = fits["cnn_student-none"], fits["cnn_student-self_logit"]
    x_train, n_train = none["train"][0], len(none["train"][0])
    x_kd, y_kd = own["train"]
    n_calibration = len(x_kd) - n_train
    assert n_calibration > 0 and torch.equal(x_kd[:n_train], x_train)
    assert (y_kd[n_train:] == -1).all() and (y_kd[:n_train] >= 0).all()  # calibration labels are never read
    targets = own["targets"]["train"].logits
    assert len(targets) == n_train + n_calibration
    assert torch.equal(targets[:n_train], predict(none["model"], x_train).logits)
    assert torch.equal(targets[n_train:], predict(none["model"], x_kd[n_train:]).logits)
