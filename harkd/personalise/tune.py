"""Fine-tuning a kept student on a worker's calibration session, by one source of labels:
- teacher: the teacher's outputs through a KD method (ours; the worker's labels are never read);
- self: the student's own outputs, Logit KD (self-training, the lower bound: the session without a teacher);
- true: the worker's labels, CE (the upper bound: what a labelled session would give; reported, never the path).

Every source adapts the same way (harkd.personalise.adapt), so the bounds move with the method. The session's
held-back slice (`Session.val`, labelled by the same source) picks the epoch when adaptation runs in epochs; fixed
steps train on every session window, and the guard checks them by cross-fitting (harkd.personalise.guard).
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput
from harkd.personalise.adapt import AdaptSpec, AxisGroups, Replay, adapt_steps, draw_weights, reestimate_bn
from harkd.train.engine import TeacherTargets, TrainConfig, fit, predict
from harkd.train.methods import MethodSpec
from harkd.train.mixup import Mixes
from harkd.train.training_sets import TrainingSet, kd_set

VAL_FRACTION = 0.15  # of the calibration windows, labelled like the rest: what picks the epoch
MIN_WINDOWS = 8  # calibration windows to train on, at the least
DEFAULT_TRAIN = TrainConfig(epochs=30, lr=1e-3, patience=8)
LOGIT = MethodSpec("logit", ({"distiller": "logit"},))


@dataclass
class FrozenTeacher:
    """A frozen teacher that labels sessions; built by ModelBundle.build_teacher, its semantic classifier included. It
    remembers what it last computed for a session (the same tensor object), since a worker's adaptations (the guard's
    included) all read the same labels."""

    model: nn.Module
    _memo: dict = field(default_factory=dict, repr=False, compare=False)

    def _remembered(self, key: str, x: torch.Tensor, compute):
        held = self._memo.get(key)
        if held is None or held[0] is not x:
            self._memo[key] = held = (x, compute())
        return held[1]

    def label(self, x: torch.Tensor) -> TeacherTargets:
        return self._remembered("label", x, lambda: predict(self.model, x))

    def on_session(self, x: torch.Tensor, adapt: AdaptSpec) -> "FrozenTeacher":
        """The teacher that labels this session: with `teacher_bn: session`, a copy whose batch-norm statistics are
        the session's; with `ensemble`, that copy and the kept teacher together (the kept one is not touched)."""
        if adapt.teacher_bn == "kept":
            return self

        def adapted() -> FrozenTeacher:
            copied = reestimate_bn(copy.deepcopy(self.model), x)
            return FrozenTeacher(copied if adapt.teacher_bn == "session" else _TwoTeachers(self.model, copied))
        return self._remembered(f"session-{adapt.teacher_bn}", x, adapted)


class _TwoTeachers(nn.Module):
    """Two teachers as one: the mean of their class probabilities (as log-probabilities, the logits distillers
    read), the representations of the second."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first, self.second = first, second
        self.rep_dims, self.map_dims = second.rep_dims, second.map_dims

    def forward(self, x: torch.Tensor) -> ModelOutput:
        a, b = self.first(x), self.second(x)
        mean = torch.logsumexp(torch.stack([a.logits.log_softmax(1), b.logits.log_softmax(1)]), 0) - math.log(2)
        heads = {k: (v + a.head_logits[k]) / 2 if k in a.head_logits else v for k, v in b.head_logits.items()}
        return ModelOutput(mean, b.reps, heads, b.maps)


@dataclass(frozen=True)
class WindowTimes:
    """Where each session window lies: its recording, its first sample, and the windows' length."""

    recordings: np.ndarray
    starts: np.ndarray
    length: int

    def held_back(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, held back) window positions: stretches of two window lengths are held back at random (a
        `fraction` of them); the held-back windows lie inside them, the training windows overlap none of them, so
        overlapping windows of a dense session never put the same samples on both sides."""
        span = 2 * self.length
        first = list(zip(self.recordings.tolist(), (self.starts // span).tolist()))
        last = list(zip(self.recordings.tolist(), ((self.starts + self.length - 1) // span).tolist()))
        stretches = sorted(set(first) | set(last))
        order = np.random.default_rng(seed).permutation(len(stretches))
        held = {stretches[i] for i in order[:max(1, int(round(fraction * len(stretches))))]}
        val = np.array([a == b and a in held for a, b in zip(first, last)])
        train = np.array([a not in held and b not in held for a, b in zip(first, last)])
        return np.flatnonzero(train), np.flatnonzero(val)

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """The first and the second half (in time) of each recording's windows; windows across a midpoint in
        neither, so the halves share no sample. Every activity of the session is in both."""
        first, second = np.zeros(len(self.starts), bool), np.zeros(len(self.starts), bool)
        for name in np.unique(self.recordings):
            mine = self.recordings == name
            middle = (self.starts[mine].min() + self.starts[mine].max() + self.length) / 2
            first |= mine & (self.starts + self.length <= middle)
            second |= mine & (self.starts >= middle)
        return np.flatnonzero(first), np.flatnonzero(second)


@dataclass(frozen=True)
class Session:
    """A worker's calibration windows, as the teacher and as the student read them (normalised for each), their true
    labels (-1 where unlabelled; only the `true` bound reads them), where each lies in time, and the seeded
    held-back slice (`val`) that picks the epoch when adaptation runs in epochs (fixed steps train on every window)."""

    x_teacher: torch.Tensor
    x_student: torch.Tensor
    y_true: torch.Tensor
    train: np.ndarray  # positions in the session
    val: np.ndarray
    times: WindowTimes

    @classmethod
    def split(cls, x_teacher: np.ndarray, x_student: np.ndarray, y_true: np.ndarray, times: WindowTimes, seed: int,
              where: str) -> "Session":
        train, val = times.held_back(VAL_FRACTION, seed)
        if len(train) < MIN_WINDOWS or not len(val):
            raise HarkdError(f"{where}: {len(x_student)} calibration windows are too few to personalise on "
                             f"({len(train)} to train on, {len(val)} held back; at least {MIN_WINDOWS} and 1); give "
                             f"more calibration data or a smaller session stride")
        return cls(torch.as_tensor(x_teacher), torch.as_tensor(x_student), torch.as_tensor(y_true), train, val, times)

    def training_windows(self, spec: AdaptSpec, on: np.ndarray | None = None) -> np.ndarray:
        """What adaptation trains on: `on` if given, else every window for fixed steps, the epochs' `train` slice
        otherwise."""
        if on is not None:
            return on
        return np.arange(len(self.x_student)) if spec.steps is not None else self.train


@dataclass(frozen=True)
class Adaptation:
    """How to adapt (the spec, the epochs' or steps' training settings, the KD method for the teacher's labels) and
    what it may read beside the session: the training workers' windows to replay and the sensors' axes to rotate."""

    spec: AdaptSpec
    train: TrainConfig
    method: MethodSpec = LOGIT
    replay: Replay | None = None
    axes: AxisGroups | None = None


@dataclass(frozen=True)
class Tuned:
    model: nn.Module
    epochs: int  # epochs run, or 0 for a fixed number of steps
    seconds: float
    says: torch.Tensor  # the source's class for every session window (what the guard checks agreement with)


def fine_tune(student: nn.Module, source: str, session: Session, teacher: FrozenTeacher, how: Adaptation,
              n_classes: int, seed: int, workdir: Path | None, on: np.ndarray | None = None) -> Tuned | None:
    """A copy of `student` adapted to the session (to the windows `on` only, if given) by `source`'s labels (module
    docstring); None when the `true` bound has too few labelled calibration windows."""
    if source == "true":
        return _tune_on_labels(student, session, how, n_classes, seed, workdir, on)
    teacher = teacher.on_session(session.x_teacher, how.spec) if source == "teacher" else teacher
    source_model = teacher.model if source == "teacher" else student
    method = how.method if source == "teacher" else LOGIT
    targets = teacher.label(session.x_teacher) if source == "teacher" else predict(student, session.x_student)
    says = targets.logits.argmax(1)
    torch.manual_seed(seed)  # a connector's initial weights
    distiller = build_method(method, student.rep_dims, source_model.rep_dims, n_classes, student.map_dims,
                             source_model.map_dims)
    train = session.training_windows(how.spec, on)
    if how.spec.epochs_with_early_stopping:
        data = _kd_set(session, train, teacher if source == "teacher" else None, targets, method, n_classes, seed)
        with _folder(workdir) as folder:
            result = fit(copy.deepcopy(student), data.pair(), (session.x_student[session.val], says[session.val]),
                         how.train, folder, seed=seed, distiller=distiller, teacher={"train": data.targets})
        return Tuned(result.model, result.epochs, result.train_time_s, says)
    train_targets = targets.subset(train)
    labels = says[train] if how.spec.ce_on_teacher and source == "teacher" else torch.full((len(train),), -1)

    def session_loss(out, index):
        return sum(distiller(out, train_targets.take(index), labels[index]).values())

    start = time.perf_counter()
    model = adapt_steps(student, session.x_student[train], session_loss,
                        draw_weights(train_targets.logits, how.spec.weighting), how.spec, how.train, seed,
                        list(distiller.parameters()), how.replay, how.axes)
    return Tuned(model, 0, time.perf_counter() - start, says)


@contextlib.contextmanager
def _folder(workdir: Path | None) -> Iterator[Path]:
    """Where epochs keep their best checkpoint: `workdir`, or a temporary folder when none is given."""
    if workdir is not None:
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="harkd-adapt-") as folder:
        yield Path(folder)


def _kd_set(session: Session, train: np.ndarray, teacher: FrozenTeacher | None, targets: TeacherTargets,
            method: MethodSpec, n_classes: int, seed: int) -> TrainingSet:
    """The training windows with the source's targets, and for a mixup method the teacher on the mixes."""
    mixes = None if method.mixup is None or teacher is None else Mixes.draw(len(train), method.mixup, seed)
    on_mixes = None if mixes is None else teacher.label(mixes.apply(session.x_teacher[train]))
    return kd_set(method, session.x_student[train], torch.full((len(train),), -1), n_classes,
                  [targets.subset(train)], None, mixes, on_mixes)


def _tune_on_labels(student: nn.Module, session: Session, how: Adaptation, n_classes: int, seed: int,
                    workdir: Path | None, on: np.ndarray | None) -> Tuned | None:
    """The upper bound: the same adaptation on the worker's labels (CE); None with too few labelled windows."""
    labelled = (session.y_true >= 0).numpy()
    train, val = session.training_windows(how.spec, on), session.val
    train, val = train[labelled[train]], val[labelled[val]]
    if len(train) < MIN_WINDOWS or (how.spec.epochs_with_early_stopping and not len(val)):
        return None
    y = session.y_true[train]
    if how.spec.epochs_with_early_stopping:
        with _folder(workdir) as folder:
            result = fit(copy.deepcopy(student), (session.x_student[train], y), (session.x_student[val],
                         session.y_true[val]), how.train, folder, seed=seed)
        return Tuned(result.model, result.epochs, result.train_time_s, session.y_true)
    start = time.perf_counter()
    model = adapt_steps(student, session.x_student[train], lambda out, index: F.cross_entropy(out.logits, y[index]),
                        draw_weights(F.one_hot(y, n_classes).float() * 10, how.spec.weighting), how.spec,
                        how.train, seed, (), how.replay, how.axes)
    return Tuned(model, 0, time.perf_counter() - start, session.y_true)


def check_personalise_method(method: MethodSpec, where: str) -> MethodSpec:
    """A method personalisation can use: it distils the kept teacher (the student's own and the true labels are
    the bounds), and the session has no labels to mix."""
    if method.teacher != "teacher" or not method.terms:
        raise HarkdError(f"{where}: {method.name!r}: a KD method with terms that distils the teacher (the 'self' "
                         f"and 'true' labels are the bounds)")
    if method.mixup is not None and method.mixup.labels == "mixed":
        raise HarkdError(f"{where}: mixup labels 'mixed' need the worker's labels, which personalisation never "
                         f"reads; use labels: teacher")
    return method


def labels_of(model: nn.Module, x: np.ndarray | torch.Tensor) -> np.ndarray:
    return predict(model, torch.as_tensor(x)).logits.argmax(1).numpy()


__all__ = ["Adaptation", "DEFAULT_TRAIN", "FrozenTeacher", "LOGIT", "Session", "Tuned", "WindowTimes",
           "check_personalise_method", "fine_tune", "labels_of"]
