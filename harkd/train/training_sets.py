"""What a student trains on for one method: its windows, their labels and, for a KD method, the targets it distils
from, one row per window. Pure functions of tensors already computed, so each case has a fast test.

- The student alone: the training windows and their labels; with `mixup`, the mixes too, on mixed labels.
- A KD method: the training windows and, with calibration, the test subjects' calibration windows (label -1: the
  distillers' CE skips it, so the new worker's labels never train); with `mixup`, the mixes, labelled -1 or (with
  `labels: mixed`) by mixed labels, every label then a row of class probabilities. The targets are the source's
  outputs on the same windows, in the same order: the teacher's, or the student alone's for `teacher: self`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harkd.train.methods import MethodSpec
from harkd.train.engine import TeacherTargets, concat_targets
from harkd.train.mixup import Mixes


@dataclass(frozen=True)
class TrainingSet:
    x: torch.Tensor
    labels: torch.Tensor  # class indices (-1: unlabelled) or, with mixed labels, class probabilities
    targets: TeacherTargets | None  # what a KD method distils from, row for row; None for the student alone

    def pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.labels


def mixup_labels(y_train: torch.Tensor, n_classes: int, mixes: Mixes, n_unlabelled: int = 0) -> torch.Tensor:
    """Class probabilities: one-hot for the training windows, zero (unlabelled) for `n_unlabelled` calibration
    windows after them, mixed for the mixes."""
    return torch.cat([F.one_hot(y_train, n_classes).float(), torch.zeros(n_unlabelled, n_classes),
                      mixes.labels(y_train, n_classes)])


def student_alone_set(x_train: torch.Tensor, y_train: torch.Tensor, n_classes: int,
                      mixes: Mixes | None = None) -> TrainingSet:
    if mixes is None:
        return TrainingSet(x_train, y_train, None)
    return TrainingSet(torch.cat([x_train, mixes.apply(x_train)]), mixup_labels(y_train, n_classes, mixes), None)


def kd_set(method: MethodSpec, x_train: torch.Tensor, y_train: torch.Tensor, n_classes: int,
           source: list[TeacherTargets], x_calibration: torch.Tensor | None = None, mixes: Mixes | None = None,
           source_on_mixes: TeacherTargets | None = None) -> TrainingSet:
    """A KD method's set: `source` holds the source's outputs on the training windows and, when `x_calibration` is
    given, on the calibration windows; `source_on_mixes` its outputs on `mixes` (given together)."""
    windows = [x_train] + ([] if x_calibration is None else [x_calibration])
    n_unlabelled = 0 if x_calibration is None else len(x_calibration)
    labels = torch.cat([y_train, torch.full((n_unlabelled,), -1)])
    targets = list(source)
    if mixes is not None:
        windows.append(mixes.apply(x_train))
        labels = mixup_labels(y_train, n_classes, mixes, n_unlabelled) if method.mixup.labels == "mixed" else \
            torch.cat([labels, torch.full((len(mixes.weight),), -1)])
        targets.append(source_on_mixes)
    return TrainingSet(torch.cat(windows), labels, concat_targets(*targets))


__all__ = ["TrainingSet", "kd_set", "mixup_labels", "student_alone_set"]
