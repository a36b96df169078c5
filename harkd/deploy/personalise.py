"""Personalise a kept student to a new worker (ours): the worker wears the full sensor kit for one calibration
session, the kept teacher labels it, and the kept student is distilled on those labels (Logit KD; the worker's true
labels are never read for training). This is `split.calibration` of `harkd run` (docs/tsak.md) as a deployment step,
except that the student is fine-tuned from its kept weights on the calibration windows alone, since a kept model
carries no training data.

The first `calibration` fraction (in time) of each of the worker's recordings is the calibration session; if the rest
has labels, teacher and student are scored on it before and after, so the gain can be checked.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harkd.data.catalog import load_windows
from harkd.data.registry import WindowConfig
from harkd.data.windowing import WindowSet
from harkd.deploy.bundle import ModelBundle
from harkd.distill.base import build_distiller
from harkd.errors import HarkdError
from harkd.experiment.folds import worker_fold
from harkd.metrics import macro_f1
from harkd.train.engine import TeacherTargets, TrainConfig, fit, predict

VAL_FRACTION = 0.15  # of the calibration windows, scored against the teacher's labels for early stopping
MIN_WINDOWS = 8  # calibration windows to train on, at the least


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


def personalise(teacher: ModelBundle, student: ModelBundle, dataset: str, subject: str, calibration: float = 0.5,
                stride: int | None = None, train: TrainConfig | None = None, seed: int = 0
                ) -> tuple[ModelBundle, dict[str, Any]]:
    """The personalised student bundle (same inputs and normalisation as `student`) and a report of the session."""
    if teacher.class_names != student.class_names:
        raise HarkdError(f"teacher and student name different classes: {teacher.class_names} vs "
                         f"{student.class_names}")
    if teacher.window != student.window:
        raise HarkdError(f"teacher and student read windows of {teacher.window} and {student.window} samples")
    # Null windows stay: a calibration session is unlabelled data, and the teacher labels it whole.
    windows = load_windows(dataset, WindowConfig(length=student.window, stride=stride or student.window,
                                                 drop_null=False))
    try:
        fold = worker_fold(windows, subject, calibration)
    except HarkdError as exc:
        raise HarkdError(f"dataset {dataset}: {exc}") from None
    x_teacher = teacher.normalise(bundle_inputs(teacher, windows, f"teacher on {dataset}"))
    x_student = student.normalise(bundle_inputs(student, windows, f"student on {dataset}"))

    torch.manual_seed(seed)
    teacher_model = teacher.build().requires_grad_(False)
    # A seeded few of the calibration windows, labelled by the teacher, pick the epoch; the others train.
    order = np.random.default_rng(seed).permutation(len(fold.calibration))  # positions in fold.calibration
    n_val = max(1, int(round(VAL_FRACTION * len(order))))
    val, train_part = order[:n_val], order[n_val:]
    if len(train_part) < MIN_WINDOWS:
        raise HarkdError(f"subject {subject}: {len(fold.calibration)} calibration windows in {dataset} are too few to "
                         f"personalise on (at least {MIN_WINDOWS + n_val}); raise the calibration fraction or lower "
                         f"the stride")
    # The teacher runs once over the session; Logit KD reads its logits alone.
    teacher_logits = predict(teacher_model, torch.from_numpy(x_teacher[fold.calibration])).logits
    teacher_says = teacher_logits.argmax(1)
    x_calibration = torch.from_numpy(x_student[fold.calibration])

    # Scored: the rest of the session where its label is one of the model's classes (e.g. not HAPT's transitions).
    data_labels, names = windows.activity_targets()
    to_model = np.array([student.class_names.index(n) if n in student.class_names else -1 for n in names] + [-1])
    y = to_model[data_labels]  # -1 (Null) indexes the appended -1
    scored = fold.test[y[fold.test] >= 0]
    teacher_f1 = round(macro_f1(y[scored], _labels(teacher_model, x_teacher[scored])), 5) if len(scored) else None
    model = student.build()
    before = _scores(model, x_calibration, teacher_says, x_student[scored], y[scored], teacher_f1)
    distiller = build_distiller("logit", model.rep_dims, teacher_model.rep_dims, len(student.class_names))
    unlabelled = torch.full((len(train_part),), -1)  # the worker's labels are never read; the CE term skips -1
    train = train or TrainConfig(epochs=30, lr=1e-3, patience=8)
    with tempfile.TemporaryDirectory(prefix="harkd-personalise-") as work:
        result = fit(model, (x_calibration[train_part], unlabelled), (x_calibration[val], teacher_says[val]), train,
                     Path(work), seed=seed, distiller=distiller,
                     teacher={"train": TeacherTargets(teacher_logits[train_part], {}, {})})
    after = _scores(result.model, x_calibration, teacher_says, x_student[scored], y[scored], teacher_f1)
    report = {"dataset": dataset, "subject": subject, "calibration": calibration,
              "calibration_windows": len(fold.calibration), "scored_windows": len(scored), "epochs": result.epochs,
              "before": before, "after": after}
    weights = {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}
    return replace(student, state_dict=weights, provenance={**student.provenance, "personalised": report}), report


def _labels(model: torch.nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    return predict(model, torch.as_tensor(x)).logits.argmax(1).numpy()


def _scores(student: torch.nn.Module, x_calibration: torch.Tensor, teacher_says: torch.Tensor, x_scored: np.ndarray,
            y_scored: np.ndarray, teacher_f1: float | None) -> dict[str, float | None]:
    """The student's agreement with the teacher on the calibration windows; its macro-F1 beside the teacher's on the
    scored windows (the labelled rest of the worker's data; None when there is none)."""
    agreement = float(np.mean(_labels(student, x_calibration) == teacher_says.numpy()))
    student_f1 = round(macro_f1(y_scored, _labels(student, x_scored)), 5) if len(y_scored) else None
    return {"agreement_with_teacher": round(agreement, 5), "student_macro_f1": student_f1,
            "teacher_macro_f1": teacher_f1}
