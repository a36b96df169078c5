"""A new worker's calibration session: which of their data the teacher labels, cut from their recordings.

The session is the start of each recording: its first `calibration` fraction (in time), or its first `minutes` (per
activity on a dataset whose recordings each hold one activity, as DSADS's do). Its windows may be denser than the
scored ones (`stride`); where a dataset's sessions are consecutive pieces of one signal (DSADS's 5 s segments) they
are joined first, so windows cross the seams, as they would in one continuous calibration session. The scored
windows are cut as the run cuts them, from `scored_from` of each recording on, so sessions of every size are scored
on the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from harkd.data.recording import Recording
from harkd.data.registry import WindowConfig, dataset_names, get_dataset
from harkd.data.splits import Fold, natural_key, recording_key, with_calibration
from harkd.data.windowing import WindowSet, make_windows
from harkd.errors import HarkdError


PROTOCOLS = ("same_recordings", "later_recordings")


@dataclass(frozen=True)
class SessionCut:
    """How much of each recording calibrates: `minutes` when given, else the `calibration` fraction; `stride` is
    the session windows' stride in samples (None: the scored windows').

    `protocol`: `same_recordings` calibrates on the start of every recording and scores the rest of each;
    `later_recordings` calibrates on the start of the worker's first recording only and scores their later
    recordings whole (a worker served on later days: HAPT's second experiment). `activities`: a partial session,
    holding only this share of the activities, drawn per worker and seed (recordings or their pieces chosen by the
    activity they show: a protocol to measure forgetting, never a product setting)."""

    calibration: float = 0.5
    minutes: float | None = None
    stride: int | None = None
    protocol: str = "same_recordings"
    activities: float | None = None

    def describe(self) -> str:
        size = f"the first {self.minutes:g} min" if self.minutes is not None else \
            f"the first {self.calibration:g}"
        where = " of the first recording" if self.protocol == "later_recordings" else " of each recording"
        partial = "" if self.activities is None else f", {self.activities:g} of the activities"
        return size + where + partial + ("" if self.stride is None else f", windows every {self.stride} samples")


def contiguous_segments(dataset: str) -> bool:
    """Whether the dataset's sessions "A/B" are consecutive pieces of one recording A (own data: never assumed)."""
    return dataset in dataset_names() and get_dataset(dataset).contiguous_segments


def _by_recording(recordings: Sequence[Recording]) -> dict[str, list[Recording]]:
    """A subject's sessions grouped by recording, each group in time order (names' numbers by value)."""
    groups: dict[str, list[Recording]] = {}
    for rec in sorted(recordings, key=lambda r: natural_key(r.session)):
        groups.setdefault(recording_key(rec.session), []).append(rec)
    return groups


def _joined(key: str, pieces: list[Recording]) -> Recording:
    first = pieces[0]
    return replace(first, signals=np.concatenate([p.signals for p in pieces]),
                   labels=np.concatenate([p.labels for p in pieces]), session=key,
                   annotations={k: np.concatenate([p.annotations[k] for p in pieces]) for k in first.annotations},
                   source=first.source)


def _head(recording: Recording, samples: int) -> Recording | None:
    if samples <= 0:
        return None
    return replace(recording, signals=recording.signals[:samples], labels=recording.labels[:samples],
                   annotations={k: v[:samples] for k, v in recording.annotations.items()})


def _first_scored_sample(pieces: list[Recording], windowing: WindowConfig, scored_from: float) -> int:
    """Where, in a recording's time (its sessions one after the other), its first scored window starts: the run
    scores the windows after the first `scored_from` of each recording's windows (harkd.data.splits)."""
    counts = [max(0, (len(p.signals) - windowing.length) // windowing.stride + 1) for p in pieces]
    skip, offset = int(round(scored_from * sum(counts))), 0
    for piece, count in zip(pieces, counts):
        if skip < count:
            return offset + skip * windowing.stride
        skip, offset = skip - count, offset + len(piece.signals)
    return offset


def _mine(recordings: Sequence[Recording], subject: str) -> list[Recording]:
    mine = [r for r in recordings if r.subject == subject]
    if not mine:
        raise HarkdError(f"no subject {subject!r}; subjects: {', '.join(sorted({r.subject for r in recordings}))}")
    return mine


def _shown(pieces: list[Recording], share: float, seed: int, subject: str) -> list[Recording]:
    """The pieces whose most frequent activity is among a random `share` of the activities (per worker and seed)."""
    first = pieces[0]
    activities = [c for c in range(len(first.class_names)) if c != first.null_class]
    rng = np.random.default_rng([seed, int.from_bytes(subject.encode()[:8].ljust(8, b"\0"), "little")])
    shown = set(rng.permutation(activities)[:max(1, int(round(share * len(activities))))].tolist())
    return [p for p in pieces if int(np.bincount(p.labels, minlength=len(first.class_names)).argmax()) in shown]


def shown_activities(recordings: Sequence[Recording], subject: str, cut: SessionCut, seed: int) -> list[str]:
    """The activities a partial session shows (all of them without `cut.activities`)."""
    mine = _mine(recordings, subject)
    if cut.activities is None:
        return [n for i, n in enumerate(mine[0].class_names) if i != mine[0].null_class]
    shown = {int(np.bincount(p.labels).argmax()) for p in _shown(mine, cut.activities, seed, subject)}
    return [mine[0].class_names[c] for c in sorted(shown)]


def session_recordings(recordings: Sequence[Recording], subject: str, cut: SessionCut, windowing: WindowConfig,
                       scored_from: float, join: bool, seed: int = 0) -> list[Recording]:
    """The parts of `subject`'s recordings the session holds: the first minutes (or fraction) of each recording (of
    the first recording alone for `later_recordings`), counted over its sessions in time order and always ending
    before its first scored window; with `join`, a recording's sessions joined into one signal first."""
    mine = _mine(recordings, subject)
    if cut.activities is not None:
        mine = _shown(mine, cut.activities, seed, subject)
    groups = _by_recording(mine)
    if cut.protocol == "later_recordings":
        first = min(groups, key=natural_key)
        groups = {first: groups[first]}
    heads = []
    for key, pieces in groups.items():
        scored = _first_scored_sample(pieces, windowing, scored_from) if cut.protocol == "same_recordings" else \
            sum(len(p.signals) for p in pieces)
        if join:
            pieces = [_joined(key, pieces)]
        budget = (int(round(cut.minutes * 60 * pieces[0].rate_hz)) if cut.minutes is not None
                  else int(round(cut.calibration * sum(len(p.signals) for p in pieces))))
        budget = min(budget, scored)
        for piece in pieces:
            head = _head(piece, min(budget, len(piece.signals)))
            budget -= len(piece.signals)
            if head is not None:
                heads.append(head)
    return heads


def scored_recordings(recordings: Sequence[Recording], subject: str, windowing: WindowConfig, scored_from: float,
                      ) -> list[Recording]:
    """The rest of each of `subject`'s recordings, from its first scored window on (what a personalised student of
    the run is scored on), a recording's sessions joined into one signal."""
    tails = []
    for key, pieces in _by_recording(_mine(recordings, subject)).items():
        start, whole = _first_scored_sample(pieces, windowing, scored_from), _joined(key, pieces)
        if start < len(whole.signals):
            tails.append(replace(whole, signals=whole.signals[start:], labels=whole.labels[start:],
                                 annotations={k: v[start:] for k, v in whole.annotations.items()}))
    return tails


def session_windows(recordings: Sequence[Recording], subject: str, cut: SessionCut, windowing: WindowConfig,
                    scored_from: float, join: bool, seed: int = 0) -> WindowSet:
    """The session's windows (Null kept: the teacher labels the session whole), cut with `windowing` at the
    session's stride."""
    parts = session_recordings(recordings, subject, cut, windowing, scored_from, join, seed)
    config = replace(windowing, stride=cut.stride or windowing.stride, drop_null=False)
    try:
        return make_windows(parts, config)
    except HarkdError:
        raise HarkdError(f"subject {subject}: {cut.describe()} holds no whole window of {windowing.length} "
                         f"samples; give more minutes") from None


def window_starts(windows: WindowSet, stride: int) -> np.ndarray:
    """Each window's first sample in its session, for windows cut by make_windows with `stride` and nothing dropped
    (each session's windows one after the other, in order)."""
    starts = np.zeros(len(windows), dtype=np.int64)
    for name in np.unique(windows.sessions):
        mine = np.flatnonzero(windows.sessions == name)
        starts[mine] = np.arange(len(mine)) * stride
    return starts


def scored_fold(windows: WindowSet, subject: str, scored_from: float, protocol: str = "same_recordings") -> Fold:
    """The worker's scored windows as a fold's test windows: from `scored_from` (in time) of each recording on, or
    (`later_recordings`) every window of the recordings after their first."""
    mine = np.flatnonzero(windows.subjects == subject)
    if len(mine) == 0:
        raise HarkdError(f"no subject {subject!r}; subjects: {', '.join(windows.subject_ids)}")
    none = np.zeros(0, dtype=np.int64)
    if protocol == "same_recordings":
        return with_calibration(windows, Fold(f"personalise-{subject}", none, none, mine, (subject,)), scored_from)
    keys = np.array([recording_key(str(s)) for s in windows.sessions[mine]])
    later = mine[keys != min(set(keys.tolist()), key=natural_key)]
    if not len(later):
        raise HarkdError(f"subject {subject}: a later-recordings session needs more than one recording per worker; "
                         f"{subject} has one")
    return Fold(f"personalise-{subject}", none, none, later, (subject,))


__all__ = ["PROTOCOLS", "SessionCut", "contiguous_segments", "shown_activities", "scored_fold", "scored_recordings",
           "session_recordings", "session_windows", "window_starts"]
