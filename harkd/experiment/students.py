"""The student stage of a fold: each student model with each method, distilled from the frozen teacher or, for a
`teacher: self` method, from the same student trained alone (the method with no terms listed before it)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harkd.distill.compose import build_method
from harkd.experiment.config import MethodSpec, ModelSpec
from harkd.experiment.folds import FoldLabels, Views
from harkd.experiment.teacher import TrainedTeacher
from harkd.train.training_sets import TrainingSet, kd_set, student_alone_set
from harkd.models.base import build_model
from harkd.train.engine import FitResult, TeacherTargets, TrainConfig, fit, predict
from harkd.train.mixup import Mixes


class Sources:
    """Where a fold's KD methods take their targets from. The teacher's outputs on the fold's windows are computed
    once (by the teacher stage), its outputs on each mixup draw once; the student alone's once it is trained."""

    def __init__(self, teacher: TrainedTeacher, teacher_inputs: Views, student_inputs: Views):
        self.teacher, self.teacher_inputs, self.student_inputs = teacher, teacher_inputs, student_inputs
        self.kd_splits = ("train", "calibration") if len(student_inputs.calibration) else ("train",)
        self.alone: nn.Module | None = None
        self._alone_base: list[TeacherTargets] = []
        self._teacher_on_mixes: dict[tuple[int, float], TeacherTargets] = {}

    def set_alone(self, student: nn.Module) -> None:
        """The student trained alone (frozen: fit returns it in eval mode, predict adds no gradients)."""
        self.alone = student
        self._alone_base = [predict(student, getattr(self.student_inputs, s)) for s in self.kd_splits]

    def model(self, method: MethodSpec, student: nn.Module) -> nn.Module:
        """The model whose rep and map dims the method's connectors match (`student` stands in for the student
        alone: same model, same dims)."""
        return student if method.teacher == "self" else self.teacher.model

    def base(self, method: MethodSpec) -> list[TeacherTargets]:
        if method.teacher == "self":
            return list(self._alone_base)
        return [self.teacher.outputs[s] for s in self.kd_splits]

    def on_mixes(self, method: MethodSpec, mixes: Mixes) -> TeacherTargets:
        if method.teacher == "self":
            return predict(self.alone, mixes.apply(self.student_inputs.train))
        draw = (method.mixup.copies, method.mixup.alpha)
        if draw not in self._teacher_on_mixes:
            self._teacher_on_mixes[draw] = self.teacher.label(mixes.apply(self.teacher_inputs.train))
        return self._teacher_on_mixes[draw]


def training_set(method: MethodSpec, sources: Sources, y: FoldLabels, n_classes: int, seed: int) -> TrainingSet:
    """The method's set on this fold (mixes drawn from their own generator, so other methods' draws stay put)."""
    inputs = sources.student_inputs
    mixes = None if method.mixup is None else Mixes.draw(len(inputs.train), method.mixup, seed)
    if not method.terms:
        return student_alone_set(inputs.train, y.train, n_classes, mixes)
    calibration = inputs.calibration if "calibration" in sources.kd_splits else None
    return kd_set(method, inputs.train, y.train, n_classes, sources.base(method), calibration, mixes,
                  None if mixes is None else sources.on_mixes(method, mixes))


def train_student(spec: ModelSpec, method: MethodSpec, sources: Sources, y: FoldLabels, n_classes: int,
                  train: TrainConfig, workdir: Path, seed: int) -> FitResult:
    """One student trained with one method; a student trained alone becomes `sources`' self teacher."""
    torch.manual_seed(seed)  # the student's and then the connectors' initial weights
    student = build_model(spec.name, sources.student_inputs.train.shape[1], n_classes, **spec.params)
    source = sources.model(method, student)
    distiller = build_method(method, student.rep_dims, source.rep_dims, n_classes, student.map_dims, source.map_dims)
    data = training_set(method, sources, y, n_classes, seed)
    result = fit(student, data.pair(), (sources.student_inputs.val, y.val), train, workdir, seed=seed,
                 distiller=distiller, teacher=None if distiller is None else {"train": data.targets})
    if distiller is None:
        sources.set_alone(result.model)
    return result


__all__ = ["Sources", "train_student", "training_set"]
