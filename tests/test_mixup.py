"""A method's `mixup` option: mixed training windows, labelled by the frozen teacher for KD methods and by mixed
labels for the student alone (the mixup control)."""

import pytest
import torch

from conftest import run_config, spy_fit
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config
from harkd.experiment.runner import run_experiment
from harkd.train.engine import predict
from harkd.train.mixup import Mixes, MixupSpec

MIX = {"copies": 2, "alpha": 0.5}
LOGIT_MIX = {"name": "logit+mixup", "terms": [{"distiller": "logit"}], "mixup": MIX}
SC_MIX = {"name": "sc_logit+mixup", "terms": [{"distiller": "sc_logit"}], "mixup": MIX}
NONE_MIX = {"name": "none+mixup", "terms": [], "mixup": MIX}


def test_mixes_are_convex_pairs_of_training_windows_drawn_from_their_own_seed():
    x = torch.arange(4 * 2 * 3, dtype=torch.float32).reshape(4, 2, 3)
    mixes = Mixes.draw(4, MixupSpec(copies=3, alpha=0.5), seed=7)
    assert torch.equal(mixes.first, torch.arange(4).repeat(3))  # every window is the first of `copies` mixes
    assert ((mixes.weight > 0) & (mixes.weight < 1)).all()
    mixed = mixes.apply(x)
    k = 5
    w, a, b = mixes.weight[k], mixes.first[k], mixes.second[k]
    assert torch.allclose(mixed[k], w * x[a] + (1 - w) * x[b])
    again = Mixes.draw(4, MixupSpec(copies=3, alpha=0.5), seed=7)
    assert torch.equal(again.second, mixes.second) and torch.equal(again.weight, mixes.weight)
    assert not torch.equal(Mixes.draw(4, MixupSpec(copies=3, alpha=0.5), seed=8).weight, mixes.weight)
    state = torch.get_rng_state()
    Mixes.draw(4, MixupSpec(), seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # other methods' random numbers are untouched


def test_mixup_labels_mix_the_one_hot_labels_with_the_window_weights():
    mixes = Mixes(first=torch.tensor([0, 1]), second=torch.tensor([1, 1]), weight=torch.tensor([0.25, 0.6]))
    labels = mixes.labels(torch.tensor([2, 0]), n_classes=3)
    assert torch.allclose(labels, torch.tensor([[0.75, 0.0, 0.25], [1.0, 0.0, 0.0]]))


def test_mixup_config_errors_name_the_method_and_the_key():
    parsed = parse_config(run_config(methods=["none", LOGIT_MIX])).methods[1]
    assert parsed.mixup == MixupSpec(copies=2, alpha=0.5)
    assert parse_config(run_config(methods=["none", "logit"])).methods[1].mixup is None
    for bad, fragment in (({"copies": 0}, "copies: must be at least 1, got 0"),
                          ({"alpha": -1}, "alpha: must be greater than 0"),
                          ({"copy": 2}, r"unknown key\(s\) \['copy'\]; valid keys: \['alpha', 'copies', 'labels'\]"),
                          (3, "expected a mapping")):
        with pytest.raises(HarkdError, match=fragment) as error:
            parse_config(run_config(methods=["none", {**LOGIT_MIX, "mixup": bad}]))
        assert "methods[1].mixup" in str(error.value) and "\n" not in str(error.value)


def test_kd_methods_train_on_teacher_labelled_mixes_and_the_alone_control_on_mixed_labels(
        data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    calls = spy_fit(monkeypatch)
    results = run_experiment(parse_config(run_config(methods=["none", "logit", LOGIT_MIX, SC_MIX, NONE_MIX])),
                             tmp_path / "out", command="t", log=lambda _: None)
    assert [r["method"] for r in results["rows"] if r["role"] == "student"] == [
        "none", "logit", "logit+mixup", "sc_logit+mixup", "none+mixup"]
    fits = {c["name"]: c for c in calls}
    x_train, y_train = fits["cnn_student-none"]["train"]
    n = len(x_train)
    mixes = Mixes.draw(n, MixupSpec(**MIX), seed=0)
    teacher = fits["teacher"]["model"]

    x_kd, y_kd = fits["cnn_student-logit+mixup"]["train"]
    assert len(x_kd) == 3 * n and torch.equal(x_kd[:n], x_train) and torch.equal(x_kd[n:], mixes.apply(x_train))
    assert torch.equal(y_kd[:n], y_train) and (y_kd[n:] == -1).all()  # mixes carry no label: KD terms only
    targets = fits["cnn_student-logit+mixup"]["targets"]["train"]
    plain = fits["cnn_student-logit"]["targets"]["train"]
    assert torch.equal(targets.logits[:n], plain.logits)
    # The teacher's own outputs on the mixed teacher windows: not a mix of its outputs on the two windows.
    x_teacher = fits["teacher"]["train"][0]
    assert torch.equal(targets.logits[n:], predict(teacher, mixes.apply(x_teacher)).logits)
    sc_targets = fits["cnn_student-sc_logit+mixup"]["targets"]["train"]
    assert sc_targets.head_logits["semantic"].shape == (3 * n, targets.logits.shape[1])
    assert torch.equal(sc_targets.logits, targets.logits)  # computed once per mixup setting, shared

    x_alone, y_alone = fits["cnn_student-none+mixup"]["train"]
    assert fits["cnn_student-none+mixup"]["targets"] is None and torch.equal(x_alone, x_kd)
    n_classes = targets.logits.shape[1]
    assert torch.equal(y_alone[:n].argmax(1), y_train) and torch.equal(y_alone[n:], mixes.labels(y_train, n_classes))


def test_mixup_methods_leave_the_other_methods_results_unchanged(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    run = lambda methods, out: run_experiment(parse_config(run_config(methods=methods)), tmp_path / out,  # noqa: E731
                                              command="t", log=lambda _: None)["rows"]
    with_mixup = run(["none", NONE_MIX, "logit", LOGIT_MIX], "a")
    without = run(["none", "logit"], "b")
    f1 = lambda rows: {(r["role"], r["method"]): r["macro_f1"] for r in rows}  # noqa: E731
    assert {k: v for k, v in f1(with_mixup).items() if "mixup" not in k[1]} == f1(without)


def test_soft_targets_give_the_same_loss_as_labels_and_skip_all_zero_rows():
    from harkd.distill.logit import LogitKD
    from harkd.models.base import ModelOutput

    torch.manual_seed(0)
    student, teacher = ModelOutput(torch.randn(4, 3), {}), ModelOutput(torch.randn(4, 3), {})
    kd = LogitKD({}, {}, 3, ce_weight=0.5)
    labels = torch.tensor([2, 0, 1, 1])
    hard = kd(student, teacher, labels)
    soft = kd(student, teacher, torch.nn.functional.one_hot(labels, 3).float())
    assert torch.allclose(hard["loss_ce"], soft["loss_ce"]) and torch.equal(hard["loss_logit"], soft["loss_logit"])
    # Row 3 unlabelled (all zero), row 2 a 0.3/0.7 mix: CE averages over the 3 labelled rows.
    probs = torch.tensor([[0, 0, 1.0], [1.0, 0, 0], [0.3, 0.7, 0], [0, 0, 0]])
    log_p = torch.log_softmax(student.logits, 1)
    expected = -(log_p[0, 2] + log_p[1, 0] + 0.3 * log_p[2, 0] + 0.7 * log_p[2, 1]) / 3
    assert torch.allclose(kd(student, teacher, probs)["loss_ce"], 0.5 * expected)


def test_mixed_labels_option_gives_kd_methods_mixups_labels_beside_the_teachers_outputs(
        data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARKD_DATA", str(data_root))
    calls = spy_fit(monkeypatch)
    both = {"name": "logit+mixup-labels", "terms": [{"distiller": "logit"}], "mixup": {**MIX, "labels": "mixed"}}
    run_experiment(parse_config(run_config(methods=["none", LOGIT_MIX, both])), tmp_path / "out", command="t",
                   log=lambda _: None)
    fits = {c["name"]: c for c in calls}
    y_train = fits["cnn_student-none"]["train"][1]
    n, n_classes = len(y_train), fits["cnn_student-logit+mixup"]["targets"]["train"].logits.shape[1]
    x_kd, y_kd = fits["cnn_student-logit+mixup-labels"]["train"]
    assert torch.equal(x_kd, fits["cnn_student-logit+mixup"]["train"][0])
    assert y_kd.shape == (3 * n, n_classes) and torch.equal(y_kd[:n].argmax(1), y_train)
    mixes = Mixes.draw(n, MixupSpec(**MIX), seed=0)
    assert torch.equal(y_kd[n:], mixes.labels(y_train, n_classes))
    assert torch.equal(fits["cnn_student-logit+mixup-labels"]["targets"]["train"].logits,
                       fits["cnn_student-logit+mixup"]["targets"]["train"].logits)
    with pytest.raises(HarkdError, match="methods\\[1\\].mixup.labels: expected 'teacher' or 'mixed', got 'label'"):
        parse_config(run_config(methods=["none", {**LOGIT_MIX, "mixup": {"labels": "label"}}]))
