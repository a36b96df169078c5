"""The personalisation stage of a unit (a config's `personalise` section): every student of the unit, fine-tuned to
each left-out worker on the first part of their recordings (harkd.deploy.personalise), scored on the rest.

Rows of role "personalised", all on the same windows (the rest of the workers' recordings, labelled): the teacher
(method "-"), and per student model and method `<method>+untouched` (the student as trained), `<method>+teacher`
(fine-tuned on the teacher's labels: ours), `<method>+self` (on its own labels: the lower bound) and `<method>+true`
(on the worker's labels: the upper bound). With several test subjects (a fixed split) each worker gets their own
fine-tuned copy, and a row pools the predictions over the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harkd.data.splits import Fold
from harkd.deploy.personalise import Session, fine_tune, labels_of
from harkd.experiment.config import PersonaliseSpec
from harkd.experiment.folds import ExperimentData, Views, worker_fold
from harkd.experiment.scoring import Scorer, View
from harkd.experiment.summary import UNTOUCHED
from harkd.experiment.teacher import TrainedTeacher

ROLE = "personalised"


@dataclass
class KeptStudent:
    """A student of the unit as trained: its model label, method and model."""

    label: str
    method: str
    model: nn.Module


@dataclass
class _Pooled:
    """One personalised model's predictions over the unit's workers."""

    preds: list[np.ndarray] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, preds: np.ndarray, epochs: int = 0, seconds: float = 0.0) -> None:
        self.preds.append(preds)
        self.epochs.append(epochs)
        self.seconds += seconds


@dataclass
class _Worker:
    """One left-out worker: the calibration session, and the scored windows as teacher and student read them."""

    session: Session
    x_teacher: torch.Tensor
    x_student: torch.Tensor
    y: np.ndarray

    @classmethod
    def of(cls, data: ExperimentData, xt: Views, xs: Views, subject: str, calibration: float,
           seed: int) -> "_Worker":
        fold = worker_fold(data.teacher_view, subject, calibration)
        scored = fold.test[data.labels[fold.test] >= 0]
        teacher_in = lambda idx: xt.normaliser(data.teacher_view.x[idx])  # noqa: E731 (the fold's normalisation)
        student_in = lambda idx: xs.normaliser(data.student_view.x[idx])  # noqa: E731
        session = Session.split(teacher_in(fold.calibration), student_in(fold.calibration),
                                data.labels[fold.calibration], seed, f"personalise: subject {subject}")
        return cls(session, torch.from_numpy(teacher_in(scored)), torch.from_numpy(student_in(scored)),
                   data.labels[scored])


@dataclass
class Personaliser:
    """What the stage needs of a unit: the spec, the data and the fold's inputs (normalised as the unit's models
    read them), the frozen teacher, the views' descriptions for the rows, the seed and a work folder."""

    spec: PersonaliseSpec
    data: ExperimentData
    inputs: tuple[Views, Views]  # the teacher's and the student's
    teacher: TrainedTeacher
    teacher_label: str
    views: tuple[View, View]
    seed: int
    work: Path

    def rows(self, fold: Fold, students: list[KeptStudent], score: Scorer) -> list[dict]:
        """The teacher's row first, then each student's untouched and fine-tuned rows."""
        pooled: dict[tuple[str, str], _Pooled] = {(self.teacher_label, "-"): _Pooled()}
        labels = []
        for subject in fold.test_subjects:
            worker = _Worker.of(self.data, *self.inputs, subject, self.spec.calibration, self.seed)
            labels.append(worker.y)
            pooled[(self.teacher_label, "-")].add(labels_of(self.teacher.model, worker.x_teacher))
            for student in students:
                self._personalise(worker, student, self.work / subject, pooled)
        y = np.concatenate(labels)
        return [score.record(ROLE, label, method, self.views[0] if method == "-" else self.views[1], y,
                             np.concatenate(p.preds), round(float(np.mean(p.epochs))), p.seconds)
                for (label, method), p in pooled.items()]

    def _personalise(self, worker: _Worker, student: KeptStudent, work: Path,
                     pooled: dict[tuple[str, str], _Pooled]) -> None:
        """One student on one worker: untouched, then fine-tuned on each source of labels the spec lists."""
        pooled.setdefault((student.label, f"{student.method}+{UNTOUCHED}"), _Pooled()).add(
            labels_of(student.model, worker.x_student))
        for source in self.spec.labels:
            result = fine_tune(student.model, source, worker.session, self.teacher, self.spec.method,
                               self.data.n_classes, self.spec.train, self.seed,
                               work / f"{student.label}-{student.method}-{source}")
            if result is not None:  # the true-label bound needs labelled calibration windows
                pooled.setdefault((student.label, f"{student.method}+{source}"), _Pooled()).add(
                    labels_of(result.model, worker.x_student), result.epochs, result.train_time_s)


__all__ = ["KeptStudent", "Personaliser", "ROLE"]
