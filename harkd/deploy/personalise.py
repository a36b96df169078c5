"""Personalise a kept student to a new worker (ours): the worker wears the full sensor kit for one calibration
session, the kept teacher labels it, and the kept student is fine-tuned on those labels with any KD method (the
worker's true labels are never read for training). `harkd personalise` does it for kept models; `harkd run` with a
`personalise` section does it after every unit, for every student of the unit (harkd.experiment.personalised).

Beside the teacher's labels (ours), two bounds on the same windows: the student fine-tuned on its own outputs
(self-training, the lower bound: what the calibration session gives without a teacher) and on the worker's true labels
(the upper bound: what a labelled session would give; reported, never the product's path).

The first `calibration` fraction (in time) of each of the worker's recordings is the calibration session; where the
rest has labels, every model is scored on it, before and after.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from harkd.data.catalog import load_windows
from harkd.data.registry import WindowConfig
from harkd.data.windowing import WindowSet
from harkd.deploy.bundle import ModelBundle
from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.experiment.config import MethodSpec, check_personalise_method
from harkd.experiment.folds import worker_fold
from harkd.experiment.training_sets import TrainingSet, kd_set
from harkd.metrics import macro_f1
from harkd.train.engine import FitResult, TeacherTargets, TrainConfig, fit, predict
from harkd.train.mixup import Mixes

VAL_FRACTION = 0.15  # of the calibration windows, labelled like the rest, for early stopping
MIN_WINDOWS = 8  # calibration windows to train on, at the least
DEFAULT_TRAIN = TrainConfig(epochs=30, lr=1e-3, patience=8)
LOGIT = MethodSpec("logit", ({"distiller": "logit"},))


class Labeller(Protocol):
    """A frozen teacher: its model (for the rep and map sizes distillers match) and its targets on windows."""

    model: nn.Module

    def label(self, x: torch.Tensor) -> TeacherTargets: ...


@dataclass
class FrozenTeacher:
    """A kept teacher as a Labeller; built by ModelBundle.build_teacher, its semantic classifier included."""

    model: nn.Module

    def label(self, x: torch.Tensor) -> TeacherTargets:
        return predict(self.model, x)


@dataclass(frozen=True)
class Session:
    """A worker's calibration windows, as the teacher and as the student read them (normalised for each), their true
    labels (-1 where unlabelled; only the `true` bound reads them), and the seeded few that pick the epoch."""

    x_teacher: torch.Tensor
    x_student: torch.Tensor
    y_true: torch.Tensor
    train: np.ndarray  # positions in the session
    val: np.ndarray

    @classmethod
    def split(cls, x_teacher: np.ndarray, x_student: np.ndarray, y_true: np.ndarray, seed: int,
              where: str) -> "Session":
        order = np.random.default_rng(seed).permutation(len(x_student))
        n_val = max(1, int(round(VAL_FRACTION * len(order))))
        if len(order) - n_val < MIN_WINDOWS:
            raise HarkdError(f"{where}: {len(order)} calibration windows are too few to personalise on (at least "
                             f"{MIN_WINDOWS + n_val}); raise the calibration fraction or lower the stride")
        return cls(torch.as_tensor(x_teacher), torch.as_tensor(x_student), torch.as_tensor(y_true), order[n_val:],
                   order[:n_val])


def fine_tune(student: nn.Module, source: str, session: Session, teacher: Labeller, method: MethodSpec,
              n_classes: int, train: TrainConfig, seed: int, workdir: Path) -> FitResult | None:
    """A copy of `student` fine-tuned on the session, labelled by `source` (one of config.PERSONALISE_LABELS):
    - teacher: the teacher's outputs through `method` (ours; the CE term sees label -1, so no worker label trains);
    - self: the student's own outputs, Logit KD (self-training, the lower bound);
    - true: the worker's labels, CE (the upper bound); None when too few calibration windows are labelled.
    The validation windows are labelled by the same source and pick the epoch."""
    if source == "true":
        data, val, distiller = _true_labels(session)
        if data is None:
            return None
    else:
        source_model = teacher.model if source == "teacher" else student
        torch.manual_seed(seed)  # a connector's initial weights
        distiller = build_method(method if source == "teacher" else LOGIT, student.rep_dims, source_model.rep_dims,
                                 n_classes, student.map_dims, source_model.map_dims)
        data, val = (_teacher_labels(session, teacher, method, n_classes, seed) if source == "teacher"
                     else _own_labels(session, student, n_classes))
    return fit(copy.deepcopy(student), data.pair(), val, train, workdir, seed=seed, distiller=distiller,
               teacher=None if distiller is None else {"train": data.targets})


def _teacher_labels(session: Session, teacher: Labeller, method: MethodSpec, n_classes: int,
                    seed: int) -> tuple[TrainingSet, tuple[torch.Tensor, torch.Tensor]]:
    targets = teacher.label(session.x_teacher)  # once over the whole session
    mixes = None if method.mixup is None else Mixes.draw(len(session.train), method.mixup, seed)
    on_mixes = None if mixes is None else teacher.label(mixes.apply(session.x_teacher[session.train]))
    data = kd_set(method, session.x_student[session.train], torch.full((len(session.train),), -1), n_classes,
                  [targets.subset(session.train)], None, mixes, on_mixes)
    return data, (session.x_student[session.val], targets.logits[session.val].argmax(1))


def _own_labels(session: Session, student: nn.Module,
                n_classes: int) -> tuple[TrainingSet, tuple[torch.Tensor, torch.Tensor]]:
    own = predict(student, session.x_student)
    data = kd_set(LOGIT, session.x_student[session.train], torch.full((len(session.train),), -1), n_classes,
                  [own.subset(session.train)])
    return data, (session.x_student[session.val], own.logits[session.val].argmax(1))


def _true_labels(session: Session) -> tuple[TrainingSet | None, tuple[torch.Tensor, torch.Tensor] | None, None]:
    labelled = (session.y_true >= 0).numpy()
    train, val = session.train[labelled[session.train]], session.val[labelled[session.val]]
    if len(train) < MIN_WINDOWS or not len(val):
        return None, None, None
    data = TrainingSet(session.x_student[train], session.y_true[train], None)
    return data, (session.x_student[val], session.y_true[val]), None


def labels_of(model: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    return predict(model, torch.as_tensor(x)).logits.argmax(1).numpy()


def bundle_inputs(bundle: ModelBundle, windows: WindowSet, where: str) -> np.ndarray:
    """The bundle's input channels, in its order, from `windows` (raw values)."""
    available = {c.name: i for i, c in enumerate(windows.channels)}
    missing = [name for name in bundle.channel_names if name not in available]
    if missing:
        raise HarkdError(f"{where}: the data has no channel {missing[0]} (of {len(missing)} missing); it has "
                         f"{', '.join(available)}")
    if abs(windows.rate_hz - bundle.rate_hz) > 1e-6:
        raise HarkdError(f"{where}: the data is sampled at {windows.rate_hz:g} Hz, the model expects "
                         f"{bundle.rate_hz:g} Hz")
    index = [available[name] for name in bundle.channel_names]
    return bundle.in_units(windows.x[:, index, :], [windows.channels[i] for i in index], where)


def model_labels(windows: WindowSet, class_names: list[str]) -> np.ndarray:
    """Each window's label as the model's class index; -1 for Null, unlabelled windows and classes the model lacks
    (e.g. HAPT's raw postural transitions)."""
    data_labels, names = windows.activity_targets()
    to_model = np.array([class_names.index(n) if n in class_names else -1 for n in names] + [-1])
    return to_model[data_labels]  # -1 (Null) indexes the appended -1


def personalise(teacher: ModelBundle, student: ModelBundle, dataset: str, subject: str, calibration: float = 0.5,
                stride: int | None = None, train: TrainConfig | None = None, seed: int = 0,
                method: MethodSpec = LOGIT, bounds: bool = False,
                scored_from: float | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """The personalised student bundle (same inputs and normalisation as `student`) and a report of the session: the
    student's agreement with the teacher on it, and where the rest is labelled (from `scored_from` of each recording
    on, default the end of the session), macro-F1 before and after beside the teacher's; with `bounds`, the
    self-training and true-label students' scores on the same windows."""
    _check_pair(teacher, student)
    check_personalise_method(method, "personalise --method")
    # Null windows stay: a calibration session is unlabelled data, and the teacher labels it whole.
    windows = load_windows(dataset, WindowConfig(length=student.window, stride=stride or student.hop,
                                                 drop_null=False))
    try:
        fold = worker_fold(windows, subject, calibration, scored_from)
    except HarkdError as exc:
        raise HarkdError(f"dataset {dataset}: {exc}") from None
    y = model_labels(windows, student.class_names)
    x_teacher = teacher.normalise(bundle_inputs(teacher, windows, f"teacher on {dataset}"))
    x_student = student.normalise(bundle_inputs(student, windows, f"student on {dataset}"))
    session = Session.split(x_teacher[fold.calibration], x_student[fold.calibration], y[fold.calibration], seed,
                            f"subject {subject} in {dataset}")
    labeller = FrozenTeacher(teacher.build_teacher())
    scored = fold.test[y[fold.test] >= 0]
    score = _Scorer(session, labeller, x_student[scored], y[scored], x_teacher[scored])
    model, train = student.build(), train or DEFAULT_TRAIN
    with tempfile.TemporaryDirectory(prefix="harkd-personalise-") as work:
        tune = lambda source: fine_tune(model, source, session, labeller, method, len(student.class_names),  # noqa
                                        train, seed, Path(work) / source)
        result = tune("teacher")
        report = {"dataset": dataset, "subject": subject, "calibration": calibration, "method": method.name,
                  "calibration_windows": len(fold.calibration), "scored_windows": len(scored),
                  "epochs": result.epochs, "before": score(model), "after": score(result.model)}
        if bounds:
            report["bounds"] = {source: None if (fitted := tune(source)) is None else score(fitted.model)
                                for source in ("self", "true")}
    weights = {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}
    return replace(student, state_dict=weights, provenance={**student.provenance, "personalised": report}), report


def _check_pair(teacher: ModelBundle, student: ModelBundle) -> None:
    if teacher.class_names != student.class_names:
        raise HarkdError(f"teacher and student name different classes: {teacher.class_names} vs "
                         f"{student.class_names}")
    if teacher.window != student.window:
        raise HarkdError(f"teacher and student read windows of {teacher.window} and {student.window} samples")


class _Scorer:
    """A student's agreement with the teacher on the calibration windows, and its macro-F1 beside the teacher's on
    the scored windows (the labelled rest of the worker's data; None when there is none)."""

    def __init__(self, session: Session, teacher: Labeller, x_scored: np.ndarray, y_scored: np.ndarray,
                 x_teacher_scored: np.ndarray):
        self.session, self.x_scored, self.y_scored = session, x_scored, y_scored
        self.teacher_says = labels_of(teacher.model, session.x_teacher)  # the teacher runs once over each set
        self.teacher_f1 = self._f1(labels_of(teacher.model, x_teacher_scored)) if len(y_scored) else None

    def _f1(self, predicted: np.ndarray) -> float:
        return round(macro_f1(self.y_scored, predicted), 5)

    def __call__(self, student: nn.Module) -> dict[str, float | None]:
        agreement = float(np.mean(labels_of(student, self.session.x_student) == self.teacher_says))
        return {"agreement_with_teacher": round(agreement, 5),
                "student_macro_f1": self._f1(labels_of(student, self.x_scored)) if len(self.y_scored) else None,
                "teacher_macro_f1": self.teacher_f1}
