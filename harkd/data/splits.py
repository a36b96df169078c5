"""Subject-wise splits (leave-one-subject-out, fixed lists) and normalisation fit on training windows only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from harkd.data.windowing import WindowSet
from harkd.errors import HarkdError


@dataclass(frozen=True)
class Fold:
    """Window indices of one split. Validation windows always come from training subjects. `calibration` windows
    (empty unless asked for) come from the test subjects, are never scored and their labels are never read: the
    teacher labels them (see `with_calibration`)."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_subjects: tuple[str, ...]
    calibration: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def describe(self) -> str:
        extra = f" (+ {len(self.calibration)} unlabelled calibration)" if len(self.calibration) else ""
        return f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test windows{extra}"


def recording_key(session: str) -> str:
    """The recording a session belongs to: a session named "A/B" is segment B of recording A (DSADS's
    "a01/s01"); any other session is a recording of its own."""
    return session.rsplit("/", 1)[0]


def natural_key(name: str) -> list:
    """Sort key that orders the numbers in a name by value (UCI-HAR's segments are named by their first sample)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def with_calibration(windows: WindowSet, fold: Fold, fraction: float) -> Fold:
    """Move the first `fraction` (in time) of every test recording into `fold.calibration`.

    The setting: a new worker wears the full sensor kit for a short calibration session, the teacher labels it, and
    the student is trained on those teacher outputs too; it is then scored on the rest of the worker's data, which
    the baselines are scored on as well. The cut is by time within each recording (windows are stored in time order
    per session, sessions of one recording in name order, numbers by value: "r/298-1398" before "r/11704-12390"),
    never by label.
    """
    if not 0 < fraction < 1:
        raise HarkdError(f"calibration (split.calibration, or personalise's --calibration) must be a fraction in "
                         f"(0, 1), got {fraction}")
    order = sorted(fold.test, key=lambda i: (windows.subjects[i], recording_key(str(windows.sessions[i])),
                                             natural_key(str(windows.sessions[i])), i))
    by_recording: dict[tuple[str, str], list[int]] = {}
    for i in order:
        by_recording.setdefault((windows.subjects[i], recording_key(str(windows.sessions[i]))), []).append(i)
    calibration = [i for ids in by_recording.values() for i in ids[:int(round(fraction * len(ids)))]]
    if not calibration:
        raise HarkdError(f"split: calibration {fraction} leaves no calibration window in fold {fold.name}")
    calibration_array = np.sort(np.array(calibration, dtype=np.int64))
    return replace(fold, test=np.setdiff1d(fold.test, calibration_array), calibration=calibration_array)


def _validation(windows: WindowSet, train_subjects: Sequence[str], val_subjects: int, val_fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split the training subjects' windows into train and validation.

    Whole subjects are held out when enough remain for training (the honest choice for cross-subject model
    selection); with too few training subjects (e.g. OpenPack's two) a seeded random fraction of windows is used.
    """
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(np.isin(windows.subjects, list(train_subjects)))
    if val_subjects > 0 and len(train_subjects) > val_subjects:
        held = rng.choice(sorted(train_subjects), size=val_subjects, replace=False)
        is_val = np.isin(windows.subjects[candidates], held)
        return candidates[~is_val], candidates[is_val]
    if not 0 < val_fraction < 1:
        raise HarkdError(f"split: val_fraction must be in (0, 1), got {val_fraction}")
    shuffled = rng.permutation(candidates)
    n_val = max(1, int(round(val_fraction * len(candidates))))
    return np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val])


def _check_subjects(windows: WindowSet, subjects: Sequence[str], what: str) -> None:
    unknown = sorted(set(subjects) - set(windows.subject_ids))
    if unknown:
        raise HarkdError(f"split: unknown {what} subject(s) {unknown}; subjects in the data: {windows.subject_ids}")


def fixed_split(windows: WindowSet, test_subjects: Sequence[str], train_subjects: Sequence[str] | None = None, *,
                val_subjects: int = 1, val_fraction: float = 0.15, seed: int = 0, name: str = "fixed") -> Fold:
    """Train on `train_subjects` (default: everyone not tested), test on `test_subjects`."""
    test_subjects = [str(s) for s in test_subjects]
    _check_subjects(windows, test_subjects, "test")
    if train_subjects is None:
        train_subjects = [s for s in windows.subject_ids if s not in test_subjects]
    train_subjects = [str(s) for s in train_subjects]
    _check_subjects(windows, train_subjects, "train")
    overlap = sorted(set(train_subjects) & set(test_subjects))
    if overlap:
        raise HarkdError(f"split: subject(s) {overlap} are in both train and test")
    if not train_subjects:
        raise HarkdError("split: no training subjects left")
    train, val = _validation(windows, train_subjects, val_subjects, val_fraction, seed)
    test = np.flatnonzero(np.isin(windows.subjects, test_subjects))
    return Fold(name, train, val, test, tuple(test_subjects))


def leave_one_subject_out(windows: WindowSet, *, val_subjects: int = 1, val_fraction: float = 0.15,
                          seed: int = 0) -> list[Fold]:
    """One fold per subject, tested on that subject alone."""
    if len(windows.subject_ids) < 2:
        raise HarkdError(f"leave-one-subject-out needs at least 2 subjects, the data has {windows.subject_ids}")
    return [fixed_split(windows, [s], val_subjects=val_subjects, val_fraction=val_fraction, seed=seed,
                        name=f"loso-{s}") for s in windows.subject_ids]


@dataclass(frozen=True)
class Normaliser:
    """Per-channel standardisation; fit it on training windows only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Normaliser":
        if len(x) == 0:
            raise HarkdError("cannot fit normalisation on zero windows")
        mean = x.mean(axis=(0, 2), dtype=np.float64)
        std = x.std(axis=(0, 2), dtype=np.float64)
        # Constant channels (e.g. OpenPack v0.3.0's all-zero quaternions) are centred, not blown up.
        std[std < 1e-8] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean[None, :, None]) / self.std[None, :, None]).astype(np.float32)


def fit_normaliser(windows: WindowSet, fold: Fold) -> Normaliser:
    """Statistics from the fold's training windows alone: validation and test windows never leak in."""
    return Normaliser.fit(windows.x[fold.train])


def group_folds(windows: WindowSet, group_by: str, n_folds: int = 3, *, val_fraction: float = 0.15,
                seed: int = 0) -> list[Fold]:
    """Within-session folds over an annotation (e.g. OpenPack's box): in every session, the k-th, (k+n)-th, ...
    groups in order are tested in fold k and the others train, so every subject is in train and test.

    Windows outside any group (annotation < 0) are left out. Validation is a seeded fraction of training windows.
    """
    if group_by not in windows.annotations:
        raise HarkdError(f"split: unknown annotation {group_by!r}; the data has: {sorted(windows.annotations)}")
    if n_folds < 2:
        raise HarkdError(f"split: n_folds must be at least 2, got {n_folds}")
    values = windows.annotations[group_by]
    fold_of = np.full(len(windows), -1)
    for session in np.unique(windows.sessions):
        in_session = (windows.sessions == session) & (values >= 0)
        for rank, value in enumerate(np.unique(values[in_session])):
            fold_of[in_session & (values == value)] = rank % n_folds
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(n_folds):
        test = np.flatnonzero(fold_of == k)
        rest = rng.permutation(np.flatnonzero((fold_of >= 0) & (fold_of != k)))
        if len(test) == 0 or len(rest) < 2:
            raise HarkdError(f"split: too few {group_by} groups for {n_folds} folds")
        n_val = max(1, int(round(val_fraction * len(rest))))
        folds.append(Fold(f"{group_by}-fold{k}", np.sort(rest[n_val:]), np.sort(rest[:n_val]), test,
                          tuple(sorted(set(windows.subjects[test].tolist())))))
    return folds
