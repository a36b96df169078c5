"""Personalisation as the main path: `harkd run` with a `personalise` section adds, after each unit, the students
fine-tuned to the left-out worker (teacher labels, and the self-training and true-label bounds) beside the untouched
students and the teacher on the same windows; kept models carry what any KD method needs to personalise later."""

import hashlib
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from conftest import MeanTeacher, run_cli, run_config
from harkd.data.install import install_dataset
from harkd.data.loaders.generic import write_generic
from harkd.data.synthetic import make_recordings
from harkd.models.bundle import load_bundle
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config
from harkd.experiment.runner import run_experiment
from harkd.models.tsak import TwoStageTeacher

UNIT = "loso-S01-seed0"
QUICK = {"epochs": 2, "batch_size": 32, "patience": 2}
PERSONALISE = {"calibration": 0.5, "method": "sc_logit", "train": QUICK}


@pytest.fixture(scope="module")
def personalised_run(data_root, tmp_path_factory):
    """One LOSO unit with personalisation and kept models; every fine-tuning's training labels recorded."""
    import harkd.personalise.tune as personalise_module

    fits = []
    real_fit = personalise_module.fit

    def spy(model, train, val, config, workdir, **kwargs):
        fits.append({"source": workdir.name.rsplit("-", 1)[-1], "labels": train[1].clone(), "val": val[1].clone()})
        return real_fit(model, train, val, config, workdir, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARKD_DATA", str(data_root))
        patch.setattr(personalise_module, "fit", spy)
        cfg = parse_config(run_config(methods=["none", "sc_logit"], personalise=PERSONALISE))
        out = tmp_path_factory.mktemp("personalised") / "run"
        results = run_experiment(cfg, out, command="test", log=lambda _: None, keep_models=True)
        yield out, results, fits


def test_each_unit_adds_personalised_rows_on_the_same_windows(personalised_run):
    _, results, _ = personalised_run
    rows = [r for r in results["rows"] if r["role"] == "personalised"]
    assert [(r["model"], r["method"]) for r in rows] == [("tsak_teacher", "-")] + [
        ("cnn_student", f"{kept}+{labels}") for kept in ("none", "sc_logit")
        for labels in ("untouched", "teacher", "guarded", "self", "true")]
    scored = {sum(map(sum, results["confusion"][f"personalised/{r['model']}/{r['method']}"])) for r in rows}
    assert len(scored) == 1  # every personalised row on the same windows
    plain = sum(map(sum, results["confusion"]["student/cnn_student/none"]))
    assert 0 < scored.pop() < plain  # the rest of the worker's recordings, after the calibration session
    assert all(r["params"] > 0 and r["flops"] > 0 for r in rows)
    summary = {(s["role"], s["method"]): s for s in results["summary"] if s["model"] == "cnn_student"}
    assert summary[("personalised", "none+teacher")]["delta_vs_none_mean"] is not None


def test_the_workers_labels_train_only_the_true_label_bound(personalised_run):
    _, _, fits = personalised_run
    assert sorted({f["source"] for f in fits}) == ["guard", "self", "teacher", "true"]
    for fit in fits:
        if fit["source"] == "true":
            assert (fit["labels"] >= 0).all() and (fit["val"] >= 0).all()
        else:  # teacher and self-training: label -1 everywhere, the CE term never sees a worker label
            assert (fit["labels"] == -1).all()


def test_kept_models_carry_the_stride_and_the_semantic_classifier(personalised_run):
    out, results, _ = personalised_run
    teacher = load_bundle(out / "models" / UNIT / "teacher.pt")
    student = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    assert teacher.stride == student.stride == 25 and student.hop == 25
    frozen = teacher.build_teacher()
    assert isinstance(frozen, TwoStageTeacher) and not any(p.requires_grad for p in frozen.parameters())
    x = torch.randn(4, len(teacher.channels), teacher.window)
    assert frozen(x).head_logits["semantic"].shape == (4, len(teacher.class_names))


def test_cli_personalises_with_any_strategy_and_reports_the_bounds(personalised_run, data_root, tmp_path):
    out, _, _ = personalised_run
    models = out / "models" / UNIT
    done = run_cli("personalise", str(models / "student-cnn_student-sc_logit.pt"), "--teacher",
                   str(models / "teacher.pt"), "--dataset", "synth", "--subject", "S01", "--method",
                   "{name: m, terms: [{distiller: sc_logit}, {distiller: attn_rep}], mixup: {copies: 1}}",
                   "--bounds", "--out", str(tmp_path / "p.pt"), data_root=data_root, check=True)
    assert "fine-tuned on its own labels" in done.stdout and "fine-tuned on the true labels" in done.stdout
    report = load_bundle(tmp_path / "p.pt").provenance["personalised"]
    assert report["method"] == "m" and set(report["bounds"]) == {"self", "true"}
    bad = run_cli("personalise", str(models / "student-cnn_student-none.pt"), "--teacher",
                  str(models / "teacher.pt"), "--dataset", "synth", "--subject", "S01", "--method", "none",
                  "--out", str(tmp_path / "q.pt"), data_root=data_root)
    assert bad.returncode == 2 and "a KD method with terms that distils the teacher" in bad.stderr
    assert not (tmp_path / "q.pt").exists()


def _install_unlabelled_worker(root, tmp_path, class_names):
    """A new worker's session in the own-data format with no activity labelled (every sample Null)."""
    recording = make_recordings(n_subjects=1, duration_s=40, rate_hz=25, seed=7)[0]
    folder = tmp_path / "worker"
    null = len(class_names)
    unlabelled = replace(recording, subject="W1", labels=np.full(len(recording.labels), null),
                         class_names=tuple(class_names) + ("idle",), null_class=null)
    write_generic([unlabelled], folder)
    archive = tmp_path / "worker.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="worker")
    install_dataset("worker", str(archive), sha256=hashlib.sha256(archive.read_bytes()).hexdigest(), root=root)


def test_an_unlabelled_session_personalises_and_writes_a_model(personalised_run, data_root, tmp_path):
    out, _, _ = personalised_run
    models = out / "models" / UNIT
    teacher = load_bundle(models / "teacher.pt")
    _install_unlabelled_worker(data_root, tmp_path, teacher.class_names)
    done = run_cli("personalise", str(models / "student-cnn_student-none.pt"), "--teacher", str(models / "teacher.pt"),
                   "--dataset", "worker", "--subject", "W1", "--bounds", "--out", str(tmp_path / "w1.pt"),
                   data_root=data_root, check=True)
    assert "nothing scored" in done.stdout
    report = load_bundle(tmp_path / "w1.pt").provenance["personalised"]
    assert report["scored_windows"] == 0 and report["after"]["student_macro_f1"] is None
    assert report["bounds"]["true"] is None  # no labels, no upper bound


def test_personalise_config_errors():
    for bad, fragment in (({"calibration": 0}, "personalise.calibration"),
                          ({"method": "none"}, "a KD method with terms"),
                          ({"students": ["logit"]}, "not methods of this run"),
                          ({"labels": ["teacher", "oracle"]}, "personalise.labels[1]")):
        with pytest.raises(HarkdError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            parse_config(run_config(methods=["none"], personalise=bad))
    as_yaml = yaml.safe_load("{labels: [teacher, self, true]}")  # YAML 1.1 reads the bare `true` as a boolean
    labels = parse_config(run_config(methods=["none"], personalise=as_yaml)).personalise.labels
    assert labels == ("teacher", "self", "true")
    with pytest.raises(HarkdError, match="personalise and split.calibration"):
        parse_config(run_config(methods=["none"], personalise={}, split={"kind": "loso", "calibration": 0.5}))


@pytest.mark.parametrize("channels", [3, 6])
@pytest.mark.parametrize("student_name, params", [("cnn_student", {}), ("causal_student", {}),
                                                  ("mobilenet_v3_1d", {"preset": "tiny"})])
def test_any_student_fine_tunes_from_every_source_of_labels(student_name, params, channels, tmp_path):
    """CNN, causal and MobileNet students on 3 or 6 channels, each source of labels: a copy is trained (the kept
    student is left as it was), and the teacher-labelled copy agrees with the teacher more than before."""
    from harkd.models.base import build_model
    from harkd.personalise.adapt import AdaptSpec
    from harkd.personalise.tune import Adaptation, FrozenTeacher, Session, WindowTimes, fine_tune, labels_of
    from harkd.train.engine import TrainConfig
    from harkd.train.methods import MethodSpec

    torch.manual_seed(0)
    n, y = 4, torch.arange(80) % 4
    x_teacher = torch.randn(80, 6, 32) + 2.0 * torch.nn.functional.one_hot(y, 6).float()[:, :, None]
    teacher = FrozenTeacher(MeanTeacher().eval())
    says = labels_of(teacher.model, x_teacher)
    times = WindowTimes(np.repeat(np.arange(10), 8).astype(str), np.tile(np.arange(8) * 32, 10), 32)
    session = Session.split(x_teacher.numpy(), x_teacher[:, :channels].numpy(), says, times, seed=0, where="test")
    student = build_model(student_name, channels, n, **params).eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    logit_t1 = MethodSpec("logit_t1", ({"distiller": "logit", "temperature": 1.0},))
    quick = TrainConfig(epochs=10, batch_size=16, lr=1e-2, patience=10)
    how = Adaptation(AdaptSpec(), quick, logit_t1)
    results = {source: fine_tune(student, source, session, teacher, how, n, 0, tmp_path / source)
               for source in ("teacher", "self", "true")}
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    agreement = lambda model: float((labels_of(model, session.x_student) == says).mean())  # noqa: E731
    assert agreement(results["teacher"].model) > agreement(student)
    assert all(result.epochs >= 1 for result in results.values())
