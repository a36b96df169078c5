"""The fold pipeline's stages, each on its own, on small synthetic windows (no install, no CLI): the fold inputs, the
teacher stage, the training set of every kind of method and the student stage."""

import pytest
import torch
import torch.nn.functional as F

from harkd.data.recording import ChannelQuery
from harkd.data.registry import WindowConfig
from harkd.data.synthetic import make_recordings
from harkd.data.windowing import make_windows
from harkd.experiment.config import MethodSpec, ModelSpec, parse_config
from harkd.experiment.folds import ExperimentData, FoldLabels, fold_views, sensor_groups
from harkd.experiment.students import Sources, train_student, training_set
from harkd.experiment.teacher import TeacherSettings, train_teacher
from harkd.train.training_sets import kd_set, mixup_labels, student_alone_set
from harkd.train.engine import TeacherTargets, TrainConfig, predict
from harkd.train.mixup import Mixes, MixupSpec

QUICK = TrainConfig(epochs=2, batch_size=32, patience=2)
STUDENT = ChannelQuery.parse({"position": "right_wrist", "modality": "acc"})


def _data(calibration: float = 0.0):
    windows = make_windows(make_recordings(n_subjects=3, duration_s=30, rate_hz=25, seed=0), WindowConfig(50, 25))
    labels, class_names = windows.activity_targets()
    data = ExperimentData(windows.select(ChannelQuery.parse(None)), windows.select(STUDENT), labels, class_names,
                          (None, None))
    split = parse_config({"dataset": "synth", "split": {"kind": "loso", "folds": ["S01"], "calibration": calibration},
                          "teacher": {"model": "tsak_teacher"}, "students": {"models": ["cnn_student"]},
                          "methods": ["none"]}).split
    return data, data.folds(split, seed=0)[0]


@pytest.fixture(scope="module")
def fold_inputs():
    data, fold = _data(calibration=0.5)
    return data, fold, FoldLabels.of(data.labels, fold), fold_views(data.teacher_view, fold), \
        fold_views(data.student_view, fold)


@pytest.fixture(scope="module")
def tsak(fold_inputs, tmp_path_factory):
    data, _, y, xt, _ = fold_inputs
    settings = TeacherSettings(ModelSpec("tsak_teacher", {"width": 8, "attn_dim": 8, "hidden": 16, "combi_dim": 8}),
                               QUICK, ModelSpec("tsak_semantic", {"hidden": 8}), QUICK)
    return train_teacher(settings, xt, y, sensor_groups(data.teacher_view.channels), data.n_classes,
                         tmp_path_factory.mktemp("teacher"), seed=0)


def test_fold_inputs_are_normalised_on_training_windows_only(fold_inputs):
    data, fold, y, xt, xs = fold_inputs
    assert fold.test_subjects == ("S01",) and len(fold.calibration) > 0
    assert set(data.student_view.subjects[fold.calibration]) == {"S01"}
    assert xt.train.mean(dim=(0, 2)).abs().max() < 1e-4  # training statistics: zero mean there, not elsewhere
    assert xt.test.mean(dim=(0, 2)).abs().max() > 1e-3
    assert xs.train.shape[1] == 3 and xt.train.shape[1] == len(data.teacher_view.channels)
    assert torch.equal(y.test, torch.from_numpy(data.labels[fold.test]))


def test_sensor_groups_make_one_token_per_position_and_modality(fold_inputs):
    data = fold_inputs[0]
    groups = sensor_groups(data.teacher_view.channels)
    assert sorted(i for g in groups for i in g) == list(range(len(data.teacher_view.channels)))
    for group in groups:
        kinds = {(data.teacher_view.channels[i].sensor or data.teacher_view.channels[i].position,
                  data.teacher_view.channels[i].modality) for i in group}
        assert len(kinds) == 1


def test_teacher_stage_freezes_the_teacher_and_adds_the_semantic_targets(tsak, fold_inputs):
    _, fold, _, xt, _ = fold_inputs
    assert not any(p.requires_grad for p in tsak.model.parameters()) and not tsak.model.training
    assert set(tsak.outputs) == {"train", "val", "test", "calibration"}
    assert len(tsak.outputs["calibration"].logits) == len(fold.calibration)
    # The semantic classifier's logits on every split: what SC-Logit distils.
    again = tsak.label(xt.train)
    assert torch.equal(again.head_logits["semantic"], tsak.outputs["train"].head_logits["semantic"])
    assert torch.equal(again.logits, predict(tsak.model, xt.train).logits)
    assert tsak.semantic_fit is not None and tsak.semantic_fit.epochs >= 1


def test_a_teacher_without_tsak_reps_has_no_semantic_stage(fold_inputs, tmp_path):
    data, _, y, xt, _ = fold_inputs
    settings = TeacherSettings(ModelSpec("cnn_student", {}), QUICK, ModelSpec("tsak_semantic", {}), QUICK)
    trained = train_teacher(settings, xt, y, sensor_groups(data.teacher_view.channels), data.n_classes, tmp_path, 0)
    assert trained.semantic is None and "semantic" not in trained.outputs["train"].head_logits


def _targets(n: int, k: int, offset: float = 0.0) -> TeacherTargets:
    return TeacherTargets(torch.arange(n * k, dtype=torch.float32).view(n, k) + offset, {}, {})


def test_training_sets_of_each_kind_of_method():
    x, y, k = torch.randn(6, 3, 10), torch.tensor([0, 1, 2, 0, 1, 2]), 3
    cal = torch.randn(4, 3, 10)
    mixup = MethodSpec("m", ({"distiller": "logit"},), mixup=MixupSpec(copies=1, alpha=1.0, labels="teacher"))
    mixes = Mixes.draw(6, mixup.mixup, seed=0)
    # The student alone: its windows and labels; with mixup, mixed one-hot labels on the mixes.
    plain = student_alone_set(x, y, k)
    assert plain.x is x and plain.labels is y and plain.targets is None
    mixed = student_alone_set(x, y, k, mixes)
    assert torch.equal(mixed.x[6:], mixes.apply(x)) and torch.allclose(mixed.labels.sum(1), torch.ones(12))
    assert torch.equal(mixed.labels[:6], F.one_hot(y, k).float())
    # KD with calibration: the calibration windows are unlabelled (-1), the targets follow row for row.
    kd = kd_set(MethodSpec("logit", ({"distiller": "logit"},)), x, y, k, [_targets(6, k), _targets(4, k, 100)], cal)
    assert torch.equal(kd.x, torch.cat([x, cal])) and kd.labels.tolist() == y.tolist() + [-1] * 4
    assert kd.targets.logits[6, 0] == 100
    # KD with mixup: the mixes are unlabelled, or with `labels: mixed` carry mixup's labels (all as probabilities).
    with_mixes = kd_set(mixup, x, y, k, [_targets(6, k)], None, mixes, _targets(6, k, 50))
    assert with_mixes.labels.tolist() == y.tolist() + [-1] * 6 and with_mixes.targets.logits[6, 0] == 50
    labelled = MethodSpec("m", mixup.terms, mixup=MixupSpec(1, 1.0, "mixed"))
    soft = kd_set(labelled, x, y, k, [_targets(6, k), _targets(4, k)], cal, mixes, _targets(6, k))
    assert torch.equal(soft.labels, mixup_labels(y, k, mixes, n_unlabelled=4))
    assert soft.labels[6:10].abs().sum() == 0 and len(soft.targets.logits) == 16


def test_student_stage_distils_from_the_teacher_or_from_the_student_alone(tsak, fold_inputs, tmp_path):
    data, _, y, xt, xs = fold_inputs
    sources = Sources(tsak, xt, xs)
    self_logit = MethodSpec("self_logit", ({"distiller": "logit"},), teacher="self")
    sc_logit = MethodSpec("sc_logit", ({"distiller": "sc_logit"},))
    spec = ModelSpec("cnn_student", {}, "cnn_student")
    # The teacher's targets on the training then calibration windows (SC-Logit reads the semantic logits).
    with_teacher = training_set(sc_logit, sources, y, data.n_classes, seed=0)
    assert torch.equal(with_teacher.targets.head_logits["semantic"],
                       torch.cat([tsak.outputs[s].head_logits["semantic"] for s in ("train", "calibration")]))
    alone = train_student(spec, MethodSpec("none", ()), sources, y, data.n_classes, QUICK, tmp_path / "a", seed=0)
    assert sources.alone is alone.model
    from_self = training_set(self_logit, sources, y, data.n_classes, seed=0)
    assert torch.equal(from_self.targets.logits, predict(alone.model, torch.cat([xs.train, xs.calibration])).logits)
    result = train_student(spec, self_logit, sources, y, data.n_classes, QUICK, tmp_path / "s", seed=0)
    assert result.epochs >= 1 and "loss_logit" in result.history[0]
