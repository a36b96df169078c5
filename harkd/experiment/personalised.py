"""The personalisation stage of a unit (a config's `personalise` section): every student of the unit adapted to each
left-out worker on a calibration session cut from their recordings (harkd.personalise), scored on the rest.

Rows of role "personalised", all on the same windows (the rest of the workers' recordings, labelled): the teacher
(method "-"), and per student model and method `<method>+untouched` (the student as trained), `<method>+teacher`
(adapted to the teacher's labels), `<method>+guarded` (the guard's choice between that and the untouched student:
what ships, harkd.personalise.guard; the row's guard_kept_adapted counts its workers), `<method>+self` (on its own
labels: the lower bound) and `<method>+true` (on the worker's labels: the upper bound). With several test subjects
(a fixed split) each worker gets their own adapted copy, and a row pools the predictions over the workers.

When the run keeps its models, each worker's shipped student (the guarded one) goes to `keep` with a report of the
session and its scores, as `harkd personalise` writes one (the bundle's provenance "personalised").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from harkd.data.splits import Fold
from harkd.data.recording import Recording
from harkd.data.windowing import WindowSet
from harkd.experiment.config import PersonaliseSpec
from harkd.experiment.folds import ExperimentData, Views
from harkd.personalise.adapt import Replay, axis_groups
from harkd.personalise.guard import Verdict, guard, teacher_refit
from harkd.personalise.session import contiguous_segments
from harkd.personalise.tune import Adaptation, FrozenTeacher, fine_tune, labels_of
from harkd.personalise.worker import Inputs, Worker
from harkd.experiment.scoring import Scorer, View
from harkd.experiment.rows import GUARDED, REFERENCE, UNTOUCHED, ResultRow
from harkd.experiment.teacher import TrainedTeacher
from harkd.metrics import macro_f1

ROLE = "personalised"


@dataclass
class KeptStudent:
    """A student of the unit as trained: its model label, method and model."""

    label: str
    method: str
    model: nn.Module


_Variant = tuple[str, str, str | None]  # (model, KD method, labels): the teacher's are None


@dataclass
class _Pooled:
    """One personalised model's predictions over the unit's workers."""

    preds: list[np.ndarray] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    seconds: float = 0.0
    adapted: list[bool] = field(default_factory=list)  # per worker, for guarded rows: whether the guard kept it

    def add(self, preds: np.ndarray, epochs: int = 0, seconds: float = 0.0, adapted: bool | None = None) -> None:
        self.preds.append(preds)
        self.epochs.append(epochs)
        self.seconds += seconds
        if adapted is not None:
            self.adapted.append(adapted)


def _channels_of(view: WindowSet, normaliser) -> Inputs:
    """A view's normalised inputs from windows of any channels that include the view's."""
    names = [c.name for c in view.channels]

    def inputs(windows: WindowSet) -> np.ndarray:
        where = {c.name: i for i, c in enumerate(windows.channels)}
        return normaliser(windows.x[:, [where[name] for name in names]])
    return inputs


@dataclass
class Personaliser:
    """What the stage needs of a unit: the spec, the data, the recordings its windows were cut from and the fold's
    inputs (normalised as the unit's models read them, the training windows replayable), the frozen teacher, the
    views' descriptions for the rows, the seed and a work folder."""

    spec: PersonaliseSpec
    data: ExperimentData
    recordings: Sequence[Recording]
    inputs: tuple[Views, Views]  # the teacher's and the student's
    train_labels: torch.Tensor
    teacher: TrainedTeacher
    teacher_label: str
    views: tuple[View, View]
    seed: int
    work: Path
    # (student, worker, shipped model, report): what a run that keeps its models does with each personalised student
    keep: Callable[[KeptStudent, str, nn.Module, dict[str, Any]], None] | None = None

    def rows(self, fold: Fold, students: list[KeptStudent], score: Scorer) -> list[ResultRow]:
        """The teacher's row first, then each student's untouched and fine-tuned rows."""
        pooled: dict[_Variant, _Pooled] = {(self.teacher_label, REFERENCE, None): _Pooled()}
        labels, how, teacher = [], self._adaptation(), FrozenTeacher(self.teacher.frozen())
        for subject in fold.test_subjects:
            worker = self._worker(subject)
            labels.append(worker.y_scored)
            pooled[(self.teacher_label, REFERENCE, None)].add(labels_of(teacher.model, worker.scored_teacher))
            for student in students:
                self._personalise(worker, student, teacher, how, self.work / subject, pooled)
        y = np.concatenate(labels)
        rows = [score.record(ROLE, label, method, self.views[0] if method == REFERENCE else self.views[1], y,
                             np.concatenate(p.preds), round(float(np.mean(p.epochs))), p.seconds, labels)
                for (label, method, labels), p in pooled.items()]
        return [replace(row, guard_kept_adapted=f"{sum(p.adapted)}/{len(p.adapted)}") if p.adapted else row
                for row, p in zip(rows, pooled.values())]

    def _worker(self, subject: str) -> Worker:
        data, (xt, xs) = self.data, self.inputs
        return Worker.of(self.recordings, (data.teacher_view, data.student_view), data.windowing, subject,
                         self.spec.cut, self.spec.scored, contiguous_segments(data.dataset),
                         (_channels_of(data.teacher_view, xt.normaliser), _channels_of(data.student_view,
                                                                                       xs.normaliser)),
                         data.class_names, self.seed)

    def _adaptation(self) -> Adaptation:
        xs = self.inputs[1]
        replay = Replay(xs.train, self.train_labels) if self.spec.adapt.replay else None
        axes = axis_groups([c.name for c in self.data.student_view.channels], xs.normaliser.mean, xs.normaliser.std)
        return Adaptation(self.spec.adapt, self.spec.train, self.spec.method, replay, axes)

    def _personalise(self, worker: Worker, student: KeptStudent, teacher: FrozenTeacher, how: Adaptation, work: Path,
                     pooled: dict[_Variant, _Pooled]) -> None:
        """One student on one worker: untouched, then adapted to each source of labels the spec lists."""
        untouched = labels_of(student.model, worker.scored_student)
        pooled.setdefault((student.label, student.method, UNTOUCHED), _Pooled()).add(untouched)
        for source in self.spec.labels:
            tuned = fine_tune(student.model, source, worker.session, teacher, how, self.data.n_classes, self.seed,
                              work / f"{student.label}-{student.method}-{source}")
            if tuned is None:  # the true-label bound needs labelled calibration windows
                continue
            pooled.setdefault((student.label, student.method, source), _Pooled()).add(
                labels_of(tuned.model, worker.scored_student), tuned.epochs, tuned.seconds)
            if source == "teacher" and self.spec.guard:
                verdict = guard(student.model, tuned, worker.session, teacher_refit(
                    student.model, worker.session, teacher, how, self.data.n_classes, self.seed,
                    work / f"{student.label}-{student.method}-guard"))
                shipped = labels_of(verdict.model, worker.scored_student)
                pooled.setdefault((student.label, student.method, GUARDED), _Pooled()).add(
                    shipped, tuned.epochs, tuned.seconds, verdict.kept == "adapted")
                if self.keep is not None:
                    self.keep(student, worker.subject, verdict.model, self._report(worker, verdict, untouched, shipped))

    def _report(self, worker: Worker, verdict: Verdict, untouched: np.ndarray, shipped: np.ndarray) -> dict[str, Any]:
        """What a kept personalised student records of itself (the keys `harkd personalise` writes)."""
        spec = self.spec
        f1 = lambda preds: round(macro_f1(worker.y_scored, preds), 5) if len(worker.y_scored) else None  # noqa: E731
        return {"dataset": self.data.dataset, "subject": worker.subject, "session": spec.cut.describe(),
                "method": spec.method.name, "adapt": asdict(spec.adapt),
                "calibration_windows": len(worker.session.x_student),
                "scored": {"from": spec.scored, "protocol": spec.cut.protocol, "windows": len(worker.y_scored)},
                "guard": {"kept": verdict.kept, "agreement": list(verdict.agreement), "why": verdict.why},
                "before": {"student_macro_f1": f1(untouched)},
                "after": {"student_macro_f1": f1(shipped)}}


__all__ = ["KeptStudent", "Personaliser", "ROLE"]
