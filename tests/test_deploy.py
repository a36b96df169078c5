"""Kept models (`harkd run --keep-models`) and their ONNX export (`harkd export`): a kept model scores its fold's
test windows exactly as the run reported, and the ONNX file scores raw windows like the kept model."""

import json
import os

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import assert_one_line_error, run_cli, run_config
from harkd.data.catalog import load_windows
from harkd.data.registry import WindowConfig
from harkd.models.bundle import ModelBundle, load_bundle
from harkd.deploy.onnx_export import export_onnx
from harkd.errors import HarkdError
from harkd.experiment.config import parse_config
from harkd.experiment.folds import ExperimentData
from harkd.experiment.runner import run_experiment
from harkd.metrics import macro_f1

UNIT = "loso-S01-seed0"


@pytest.fixture(scope="module")
def kept_run(data_root, tmp_path_factory):
    """One fold, one seed, two methods, models kept; the data root stays set for the module's tests."""
    before = os.environ.get("HARKD_DATA")
    os.environ["HARKD_DATA"] = str(data_root)
    cfg = parse_config(run_config(methods=["none", "logit"]))
    out = tmp_path_factory.mktemp("kept") / "run"
    results = run_experiment(cfg, out, command="test", log=lambda _: None, keep_models=True)
    yield cfg, out, results
    if before is None:
        os.environ.pop("HARKD_DATA")
    else:
        os.environ["HARKD_DATA"] = before


def test_every_trained_model_is_kept_with_its_provenance(kept_run):
    _, out, results = kept_run
    files = sorted(p.name for p in (out / "models" / UNIT).iterdir())
    assert files == ["student-cnn_student-logit.pt", "student-cnn_student-none.pt", "teacher.pt"]
    teacher = load_bundle(out / "models" / UNIT / "teacher.pt")
    assert teacher.channel_groups and len(teacher.channels) == results["rows"][0]["n_channels"]
    student = load_bundle(out / "models" / UNIT / "student-cnn_student-logit.pt")
    assert student.channel_names == ["right_wrist/acc/x", "right_wrist/acc/y", "right_wrist/acc/z"]
    assert student.provenance["method"] == "logit" and student.provenance["fold"] == "loso-S01"
    assert student.window == 50 and student.rate_hz == 25.0


def test_a_kept_model_reproduces_its_reported_score_from_raw_windows(kept_run):
    cfg, out, results = kept_run
    data = ExperimentData.load(cfg, cfg.teacher_channels, cfg.student_channels)
    fold = data.folds(cfg.split, 0)[0]
    for row in results["rows"]:
        if row["role"] == "semantic":
            continue
        name = "teacher.pt" if row["role"] == "teacher" else f"student-{row['model']}-{row['method']}.pt"
        bundle = load_bundle(out / "models" / UNIT / name)
        view = data.teacher_view if row["role"] == "teacher" else data.student_view
        probabilities = bundle.predict(view.x[fold.test])
        assert probabilities.shape == (len(fold.test), len(data.class_names))
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
        score = macro_f1(data.labels[fold.test], probabilities.argmax(1))
        assert round(score, 5) == row["macro_f1"], name


def test_a_fresh_run_in_the_same_folder_removes_the_old_models(kept_run, tmp_path):
    cfg, out, _ = kept_run
    copy = tmp_path / "run"
    (copy / "models" / UNIT).mkdir(parents=True)
    stale = copy / "models" / UNIT / "teacher.pt"
    stale.write_bytes((out / "models" / UNIT / "teacher.pt").read_bytes())
    lines = []
    run_experiment(parse_config(run_config(methods=["none"])), copy, command="test", log=lines.append)
    assert not (copy / "models").exists()
    assert any("removed the models of the previous run" in line for line in lines)


def test_bundle_round_trip_and_input_checks(kept_run, tmp_path):
    _, out, _ = kept_run
    bundle = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    bundle.save(tmp_path / "copy.pt")
    again = load_bundle(tmp_path / "copy.pt")
    x = np.random.default_rng(0).normal(size=(5, 3, 50)).astype(np.float32)
    np.testing.assert_array_equal(bundle.predict(x), again.predict(x))
    with pytest.raises(HarkdError, match=r"expected windows of shape \(N, 3, 50\).*got \(5, 3, 40\)"):
        bundle.predict(x[:, :, :40])
    x[2, 1, 7] = np.nan
    with pytest.raises(HarkdError, match="non-finite value in window 2, channel right_wrist/acc/y, sample 7"):
        bundle.predict(x)


def test_unreadable_model_files_are_one_line_errors(kept_run, tmp_path):
    _, out, _ = kept_run
    with pytest.raises(HarkdError, match="model file not found"):
        load_bundle(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(HarkdError, match="not a readable harkd model file"):
        load_bundle(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(HarkdError, match="not a harkd model file"):
        load_bundle(tmp_path / "other.pt")
    raw = torch.load(out / "models" / UNIT / "teacher.pt", weights_only=True)
    torch.save({**raw, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(HarkdError, match="format version 99; this harkd reads 1"):
        load_bundle(tmp_path / "future.pt")
    truncated = (out / "models" / UNIT / "teacher.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(truncated[: len(truncated) // 2])
    with pytest.raises(HarkdError, match="not a readable harkd model file"):
        load_bundle(tmp_path / "cut.pt")


NOT_MODELS = {"README.md": b"# harkd\n\nKnowledge distillation for wearable HAR.\n",
              "random.bin": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
              "empty.pt": b""}


@pytest.mark.parametrize("name", NOT_MODELS)
def test_a_file_that_is_no_model_is_a_one_line_error_naming_it(name, tmp_path):
    (tmp_path / name).write_bytes(NOT_MODELS[name])
    with pytest.raises(HarkdError) as error:
        load_bundle(tmp_path / name)
    assert str(error.value) == (f"{tmp_path / name}: not a readable harkd model file (not a PyTorch file; kept "
                                f"models come from `harkd run --keep-models`)")


def test_a_pytorch_file_of_other_objects_is_a_one_line_error(tmp_path):
    torch.save({"optimiser": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)}, tmp_path / "opt.pt")
    with pytest.raises(HarkdError) as error:
        load_bundle(tmp_path / "opt.pt")
    assert str(error.value) == (f"{tmp_path / 'opt.pt'}: not a harkd model file (a PyTorch file holding objects "
                                f"other than plain data and tensors)")


def test_cli_export_of_a_readme_is_one_line(tmp_path):
    (tmp_path / "README.md").write_bytes(NOT_MODELS["README.md"])
    result = run_cli("export", str(tmp_path / "README.md"), "--out", str(tmp_path / "x.onnx"), data_root=tmp_path)
    assert_one_line_error(result, "README.md: not a readable harkd model file (not a PyTorch file")
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_export_scores_raw_windows_like_the_kept_model(kept_run, tmp_path):
    _, out, _ = kept_run
    bundle = load_bundle(out / "models" / UNIT / "student-cnn_student-logit.pt")
    spec = export_onnx(bundle, tmp_path / "student.onnx")
    described = json.loads((tmp_path / "student.json").read_text())
    assert described == json.loads(json.dumps(spec))
    assert described["input"]["shape"] == ["N", 3, 50] and described["class_names"] == bundle.class_names
    assert [c["name"] for c in described["input"]["channels"]] == bundle.channel_names
    assert described["check"]["max_abs_diff"] <= 1e-4
    windows = load_windows("synth", WindowConfig(length=50, stride=25)).select(
        {"position": "right_wrist", "modality": "acc"}).x[:3]  # raw values, a batch size the export never saw
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"windows": windows})
    np.testing.assert_allclose(probabilities, bundle.predict(windows), atol=1e-5)
    assert logits.shape == (3, len(bundle.class_names))


def test_a_failed_export_check_writes_nothing(kept_run, tmp_path):
    _, out, _ = kept_run
    bundle = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    with pytest.raises(HarkdError, match="differ from PyTorch's by .*; nothing written"):
        export_onnx(bundle, tmp_path / "student.onnx", tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(HarkdError, match="must end in .onnx"):
        export_onnx(bundle, tmp_path / "student.bin")


def test_cli_export_and_its_errors(kept_run, data_root, tmp_path):
    _, out, _ = kept_run
    done = run_cli("export", str(out / "models" / UNIT / "student-cnn_student-none.pt"), "--out",
                   str(tmp_path / "deploy" / "student.onnx"), data_root=data_root, check=True)
    assert "(N, 3, 50) at 25 Hz" in done.stdout and "ONNX Runtime matches PyTorch" in done.stdout
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["student.json", "student.onnx"]
    missing = run_cli("export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx"), data_root=data_root)
    assert_one_line_error(missing, "nope.pt", "model file not found")
    assert not (tmp_path / "x.onnx").exists()


def test_bundle_of_records_what_it_is_given():
    from harkd.data.recording import ChannelSpec
    from harkd.data.splits import Normaliser
    from harkd.models.base import build_model

    model = build_model("cnn_student", 2, 3, width=4, depth=1)
    channels = [ChannelSpec("wrist", "acc", axis, "g") for axis in "xy"]
    bundle = ModelBundle.of(model, "cnn_student", {"width": 4, "depth": 1}, channels, ["a", "b", "c"], 20, 50.0,
                            Normaliser(np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)),
                            seed=3)
    assert bundle.mean == [1.0, 2.0] and bundle.std == [3.0, 4.0] and bundle.provenance == {"seed": 3}
    x = np.stack([np.full((2, 20), 1.0), np.full((2, 20), 7.0)]).astype(np.float32)
    assert np.allclose(bundle.normalise(x)[1, 0], 2.0) and np.allclose(bundle.normalise(x)[1, 1], 1.25)
    rebuilt = bundle.build()
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values()))


def test_personalise_distils_the_teacher_labels_of_a_calibration_session(kept_run, monkeypatch, tmp_path):
    import harkd.personalise.tune as tune_module
    from harkd.personalise.adapt import AdaptSpec
    from harkd.personalise.kept import personalise
    from harkd.personalise.session import SessionCut
    from harkd.personalise.tune import Adaptation
    from harkd.train.engine import TrainConfig

    _, out, _ = kept_run
    teacher = load_bundle(out / "models" / UNIT / "teacher.pt")
    student = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    seen = {}
    real_fit = tune_module.fit

    def spy(model, train, val, *args, **kwargs):
        seen["train_labels"], seen["val_labels"], seen["teacher"] = train[1], val[1], kwargs["teacher"]["train"]
        return real_fit(model, train, val, *args, **kwargs)

    monkeypatch.setattr(tune_module, "fit", spy)
    personal, report = personalise(teacher, student, "synth", "S01", SessionCut(0.5, stride=5),
                                   Adaptation(AdaptSpec(), TrainConfig(epochs=15, lr=3e-3, patience=15)))
    assert (seen["train_labels"] == -1).all()  # the worker's labels are never read for training
    assert len(seen["teacher"].logits) == len(seen["train_labels"])
    assert report["calibration_windows"] >= len(seen["train_labels"]) + len(seen["val_labels"])
    assert report["scored_windows"] > 0 and report["after"]["teacher_macro_f1"] == report["before"]["teacher_macro_f1"]
    # this 2-epoch teacher says one class: the shipped epochs' early stopping keeps the first epoch, fixed steps learn
    personal, report = personalise(teacher, student, "synth", "S01", SessionCut(0.5, stride=5),
                                   Adaptation(AdaptSpec(steps=100), TrainConfig(lr=3e-3)))
    assert report["after"]["agreement_with_teacher"] > report["before"]["agreement_with_teacher"] + 0.3
    assert personal.channels == student.channels and personal.mean == student.mean
    assert personal.provenance["personalised"]["subject"] == "S01"
    assert any(not torch.equal(personal.state_dict[k], student.state_dict[k]) for k in student.state_dict)
    personal.save(tmp_path / "personal.pt")
    assert load_bundle(tmp_path / "personal.pt").provenance["personalised"] == json.loads(json.dumps(report))


def test_personalise_refuses_mismatched_models_and_data(kept_run):
    from dataclasses import replace

    from harkd.personalise.kept import personalise
    from harkd.personalise.session import SessionCut

    _, out, _ = kept_run
    teacher = load_bundle(out / "models" / UNIT / "teacher.pt")
    student = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    with pytest.raises(HarkdError, match="no subject 'S09'; subjects: S01, S02, S03"):
        personalise(teacher, student, "synth", "S09")
    with pytest.raises(HarkdError, match="different classes"):
        personalise(teacher, replace(student, class_names=student.class_names[::-1]), "synth", "S01")
    renamed = [dict(c, position="left_ankle") if i == 0 else c for i, c in enumerate(student.channels)]
    with pytest.raises(HarkdError, match="student on synth: the data has no channel left_ankle/acc/x"):
        personalise(teacher, replace(student, channels=renamed), "synth", "S01")
    with pytest.raises(HarkdError, match="sampled at 25 Hz, the model expects 50 Hz"):
        personalise(replace(teacher, rate_hz=50.0), student, "synth", "S01")
    with pytest.raises(HarkdError, match="subject S01: [0-9]+ calibration windows are too few"):
        personalise(teacher, student, "synth", "S01", SessionCut(calibration=0.1, stride=50))


def test_cli_personalise(kept_run, data_root, tmp_path):
    _, out, _ = kept_run
    models = out / "models" / UNIT
    args = ["personalise", str(models / "student-cnn_student-none.pt"), "--teacher", str(models / "teacher.pt"),
            "--dataset", "synth", "--subject", "S01"]
    done = run_cli(*args, "--out", str(tmp_path / "personal.pt"), data_root=data_root, check=True)
    assert "labelled by the teacher" in done.stdout and "student macro-F1" in done.stdout
    assert load_bundle(tmp_path / "personal.pt").provenance["personalised"]["subject"] == "S01"
    wrong = run_cli(*args, "--out", str(tmp_path / "personal.onnx"), data_root=data_root)
    assert_one_line_error(wrong, "personal.onnx", "must end in .pt")
    budget = run_cli(*args, "--minutes", "0.2", "--stride", "10", "--adapt", "{steps: 30, teacher_bn: ensemble}",
                     "--out", str(tmp_path / "minutes.pt"), data_root=data_root, check=True)
    assert "the first 0.2 min of each recording, windows every 10 samples" in budget.stdout
    assert "guard: agreement with the teacher" in budget.stdout
    report = load_bundle(tmp_path / "minutes.pt").provenance["personalised"]
    assert report["adapt"]["steps"] == 30 and report["guard"]["kept"] in ("adapted", "untouched")
    for bad, fragment in (("{steps: 0}", "steps"), ("[1]", "--adapt: expected a YAML mapping"),
                          ("{stride: 3}", "stride")):
        refused = run_cli(*args, "--adapt", bad, "--out", str(tmp_path / "bad.pt"), data_root=data_root)
        assert_one_line_error(refused, fragment)
        assert not (tmp_path / "bad.pt").exists()


def test_personalise_scores_only_windows_of_the_models_classes(kept_run):
    """HAPT's raw recordings hold transitions the UCI-HAR models never learnt: such windows are not scored."""
    from dataclasses import replace

    from harkd.personalise.adapt import AdaptSpec
    from harkd.personalise.kept import personalise
    from harkd.personalise.session import SessionCut
    from harkd.personalise.tune import Adaptation
    from harkd.train.engine import TrainConfig

    _, out, _ = kept_run
    teacher = load_bundle(out / "models" / UNIT / "teacher.pt")
    student = load_bundle(out / "models" / UNIT / "student-cnn_student-none.pt")
    quick = Adaptation(AdaptSpec(), TrainConfig(epochs=1, patience=1))
    _, full = personalise(teacher, student, "synth", "S01", SessionCut(stride=10), quick)
    renamed = ["unknown_activity"] + student.class_names[1:]
    _, partial = personalise(replace(teacher, class_names=renamed), replace(student, class_names=renamed), "synth",
                             "S01", SessionCut(stride=10), quick)
    assert 0 < partial["scored_windows"] < full["scored_windows"]
