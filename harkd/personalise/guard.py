"""The guard: before an adapted student replaces the kept one, harkd estimates, from the teacher's labels on the
session alone, whether adapting helps this worker. Cross-fitting: the student is adapted on the first half (in time)
of each recording's session (with half the steps) and checked on the second, and the other way round, so every
activity is both trained on and checked and no checked window shares a sample with a training one. The adapted
student (trained on the whole session) is kept unless those cross-fitted students agree with the teacher less than
the kept student does; no window is spent on a held-back slice."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from harkd.personalise.tune import Adaptation, FrozenTeacher, Session, Tuned, fine_tune, labels_of

Refit = Callable[[np.ndarray], nn.Module]  # the same adaptation on some of the session's windows


def teacher_refit(student: nn.Module, session: Session, teacher: FrozenTeacher, how: Adaptation, n_classes: int,
                  seed: int, workdir: Path | None = None) -> Refit:
    """The teacher-labelled adaptation of `student` on some of the session's windows, with half the steps: a half
    of the session seen as often as the whole session is in the adaptation it checks. `workdir`: where epochs keep
    their checkpoint (a temporary folder when None)."""
    if how.spec.steps is not None:
        how = replace(how, spec=replace(how.spec, steps=max(1, how.spec.steps // 2)))
    return lambda on: fine_tune(student, "teacher", session, teacher, how, n_classes, seed, workdir, on).model


@dataclass(frozen=True)
class Verdict:
    """Which student the guard kept, and the agreements with the teacher it decided on."""

    model: nn.Module
    kept: str  # "adapted" or "untouched"
    agreement: tuple[float, float]  # the untouched student's, and the cross-fitted adapted students'

    @property
    def why(self) -> str:
        before, after = self.agreement
        return (f"agreement with the teacher on windows it did not train on {before:.3f} -> {after:.3f} "
                f"(cross-fitted): kept the {self.kept} student")


def guard(untouched: nn.Module, tuned: Tuned, session: Session, refit: Refit) -> Verdict:
    """The adapted student unless students adapted on one half of the session agree less with the teacher's
    labels on the other half than the untouched student does on both."""
    halves = session.times.halves()
    says = tuned.says.numpy()
    if not all(len(h) for h in halves):  # a session too short to halve: nothing to check it on
        return Verdict(tuned.model, "adapted", (float("nan"), float("nan")))
    both = np.concatenate(halves)
    before = float(np.mean(labels_of(untouched, session.x_student[both]) == says[both]))
    hits = sum(int(np.sum(labels_of(refit(train), session.x_student[check]) == says[check]))
               for train, check in (halves, halves[::-1]))
    after = hits / len(both)
    kept = "adapted" if after >= before else "untouched"
    return Verdict(tuned.model if kept == "adapted" else untouched, kept, (round(before, 5), round(after, 5)))


__all__ = ["Refit", "Verdict", "guard", "teacher_refit"]
