"""One new worker as personalisation reads them: the calibration session (cut from their recordings) and the
scored windows, each as the teacher and as the student read them; shared by `harkd personalise` and the runner's
personalisation stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from harkd.data.recording import Recording
from harkd.data.registry import WindowConfig
from harkd.data.windowing import WindowSet
from harkd.personalise.session import SessionCut, scored_fold, session_windows, window_starts
from harkd.personalise.tune import Session, WindowTimes

Inputs = Callable[[WindowSet], np.ndarray]  # a model's normalised inputs from windows of every channel


@dataclass(frozen=True)
class Worker:
    """A worker's calibration session and scored windows (labelled ones only; empty when the rest is unlabelled)."""

    subject: str
    session: Session
    scored_teacher: torch.Tensor
    scored_student: torch.Tensor
    y_scored: np.ndarray

    @classmethod
    def of(cls, recordings: Sequence[Recording], windows: tuple[WindowSet, WindowSet], windowing: WindowConfig,
           subject: str, cut: SessionCut, scored_from: float, join: bool, inputs: tuple[Inputs, Inputs],
           class_names: Sequence[str], seed: int) -> "Worker":
        """`windows`: the run's windows (cut with `windowing`) as the teacher and the student read them, which the
        scored windows come from; `inputs`: the teacher's and the student's normalised inputs from windows of any
        channels that include theirs."""
        teacher_in, student_in = inputs
        calibration = session_windows(recordings, subject, cut, windowing, scored_from, join, seed)
        times = WindowTimes(calibration.sessions, window_starts(calibration, cut.stride or windowing.stride),
                            windowing.length)
        session = Session.split(teacher_in(calibration), student_in(calibration),
                                calibration.targets_for(class_names), times, seed, f"personalise: subject {subject}")
        scored = scored_fold(windows[0], subject, scored_from, cut.protocol).test
        y = windows[0].subset(scored).targets_for(class_names)
        labelled = scored[y >= 0]
        return cls(subject, session, torch.from_numpy(teacher_in(windows[0].subset(labelled))),
                   torch.from_numpy(student_in(windows[1].subset(labelled))), y[y >= 0])


__all__ = ["Inputs", "Worker"]
