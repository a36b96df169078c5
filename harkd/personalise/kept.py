"""Personalise a kept student to a new worker (ours): the worker wears the full sensor kit for one calibration
session, the kept teacher labels it, and the kept student adapts to those labels with any KD method (the worker's
true labels are never read for training). `harkd personalise` does it for kept models; `harkd run` with a
`personalise` section does it after every unit, for every student of the unit (harkd.experiment.personalised).

Beside the teacher's labels (ours), two bounds on the same windows: the student adapted the same way to its own
outputs (self-training, the lower bound: what the calibration session gives without a teacher) and to the worker's
true labels (the upper bound: what a labelled session would give; reported, never the product's path).

The session is the start of each of the worker's recordings (harkd.personalise.session); where the rest has labels,
every model is scored on it, before and after.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harkd.data.catalog import load_recordings, load_windows
from harkd.data.plausibility import unit_findings
from harkd.data.registry import WindowConfig
from harkd.models.bundle import ModelBundle
from harkd.errors import HarkdError
from harkd.metrics import macro_f1
from harkd.personalise.session import SessionCut, contiguous_segments
from harkd.personalise.adapt import AdaptSpec, Replay, axis_groups
from harkd.personalise.guard import guard, teacher_refit
from harkd.personalise.tune import (DEFAULT_TRAIN, Adaptation, FrozenTeacher, check_personalise_method, fine_tune,
                                    labels_of)
from harkd.personalise.worker import Worker


def personalise(teacher: ModelBundle, student: ModelBundle, dataset: str, subject: str,
                cut: SessionCut = SessionCut(), how: Adaptation | None = None, seed: int = 0, bounds: bool = False,
                scored_from: float | None = None) -> tuple[ModelBundle, dict[str, Any]]:
    """The personalised student bundle (same inputs and normalisation as `student`) and a report of the session: the
    student's agreement with the teacher on it, and where the rest is labelled (from `scored_from` of each recording
    on, default the end of the session), macro-F1 before and after beside the teacher's; with `bounds`, the
    self-training and true-label students' scores on the same windows."""
    _check_pair(teacher, student)
    how = _with_training_data(how or Adaptation(AdaptSpec(), DEFAULT_TRAIN), student, subject)
    check_personalise_method(how.method, "personalise --method")
    scored = cut.calibration if scored_from is None else scored_from
    worker = _worker(teacher, student, dataset, subject, cut, scored, seed)
    labeller = FrozenTeacher(teacher.build_teacher())
    score = _Scorer(worker, labeller)
    model = student.build()
    with tempfile.TemporaryDirectory(prefix="harkd-personalise-") as work:
        tune = lambda source: fine_tune(model, source, worker.session, labeller, how,  # noqa: E731
                                        len(student.class_names), seed, Path(work) / source)
        adapted = tune("teacher")
        verdict = guard(model, adapted, worker.session, teacher_refit(
            model, worker.session, labeller, how, len(student.class_names), seed, Path(work) / "guard"))
        result = verdict.model
        report = {"dataset": dataset, "subject": subject, "session": cut.describe(), "method": how.method.name,
                  "adapt": asdict(how.spec), "calibration_windows": len(worker.session.x_student),
                  "scored_windows": len(worker.y_scored), "epochs": adapted.epochs,
                  "scored": {"from": scored, "protocol": cut.protocol, "windows": len(worker.y_scored)},
                  "guard": {"kept": verdict.kept, "agreement": list(verdict.agreement), "why": verdict.why},
                  "before": score(model), "adapted": score(adapted.model), "after": score(result),
                  "warnings": _unit_warnings(dataset, subject, student)}
        if bounds:
            report["bounds"] = {source: None if (fitted := tune(source)) is None else score(fitted.model)
                                for source in ("self", "true")}
    return student.personalised(result, report), report


def _worker(teacher: ModelBundle, student: ModelBundle, dataset: str, subject: str, cut: SessionCut,
            scored_from: float, seed: int) -> Worker:
    """The worker's session and scored windows from the installed dataset, as the teacher and the student read
    them."""
    windowing = WindowConfig(length=student.window, stride=student.hop, drop_null=False)
    try:
        windows = load_windows(dataset, windowing)
        return Worker.of(load_recordings(dataset), (windows, windows), windowing, subject, cut, scored_from,
                         contiguous_segments(dataset),
                         (partial(teacher.normalised_inputs, where=f"teacher on {dataset}"),
                          partial(student.normalised_inputs, where=f"student on {dataset}")),
                         student.class_names, seed)
    except HarkdError as exc:
        raise HarkdError(f"dataset {dataset}: {exc}") from None


def _unit_warnings(dataset: str, subject: str, student: ModelBundle) -> list[str]:
    """The worker's sensors whose numbers do not fit their units (as `harkd data check` finds them)."""
    windows = load_windows(dataset, WindowConfig(length=student.window, stride=student.hop, drop_null=False))
    mine = windows.subset(np.flatnonzero(windows.subjects == subject))
    return [f"{dataset} {subject}: {line}" for line in unit_findings(mine.x, mine.channels)]


def _with_training_data(how: Adaptation, student: ModelBundle, worker: str) -> Adaptation:
    """`how` with the sensors' axes to rotate and, when it replays, the kept student's training windows: its run's
    dataset without its test subjects and the worker (the dataset must be installed)."""
    axes = axis_groups(student.channel_names, np.asarray(student.mean), np.asarray(student.std))
    if not how.spec.replay or how.replay is not None:
        return replace(how, axes=axes)
    dataset = student.provenance.get("dataset")
    if dataset is None:
        raise HarkdError("personalise: adapt.replay needs the student's training data, and this kept student does "
                         "not record its dataset; set replay: 0")
    windows = load_windows(dataset, WindowConfig(length=student.window, stride=student.hop))
    held_out = set(student.provenance.get("test_subjects", ())) | {worker}
    train = windows.subset(np.flatnonzero(~np.isin(windows.subjects, sorted(held_out))))
    y = train.targets_for(student.class_names)
    train = train.subset(np.flatnonzero(y >= 0))
    x = student.normalised_inputs(train, f"replay of {dataset}")
    return replace(how, axes=axes, replay=Replay(torch.from_numpy(x), torch.from_numpy(y[y >= 0])))


def _check_pair(teacher: ModelBundle, student: ModelBundle) -> None:
    if teacher.class_names != student.class_names:
        raise HarkdError(f"teacher and student name different classes: {teacher.class_names} vs "
                         f"{student.class_names}")
    if teacher.window != student.window:
        raise HarkdError(f"teacher and student read windows of {teacher.window} and {student.window} samples")


class _Scorer:
    """A student's agreement with the teacher on the calibration windows, and its macro-F1 beside the teacher's on
    the scored windows (the labelled rest of the worker's data; None when there is none)."""

    def __init__(self, worker: Worker, teacher: FrozenTeacher):
        self.session, self.x_scored, self.y_scored = worker.session, worker.scored_student, worker.y_scored
        self.teacher_says = labels_of(teacher.model, self.session.x_teacher)  # the teacher runs once over each set
        self.teacher_f1 = self._f1(labels_of(teacher.model, worker.scored_teacher)) if len(self.y_scored) else None

    def _f1(self, predicted: np.ndarray) -> float:
        return round(macro_f1(self.y_scored, predicted), 5)

    def __call__(self, student: nn.Module) -> dict[str, float | None]:
        agreement = float(np.mean(labels_of(student, self.session.x_student) == self.teacher_says))
        return {"agreement_with_teacher": round(agreement, 5),
                "student_macro_f1": self._f1(labels_of(student, self.x_scored)) if len(self.y_scored) else None,
                "teacher_macro_f1": self.teacher_f1}
