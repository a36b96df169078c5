"""Sliding windows over recordings: the (N, C, L) arrays every model trains on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from harkd.data.recording import ChannelQuery, ChannelSpec, Recording, check_same_classes
from harkd.data.registry import WindowConfig
from harkd.errors import HarkdError


@dataclass
class WindowSet:
    """Windows (N, channels, length) with one label, subject and session per window.

    `annotations` carries each recording annotation track sampled at the window centre (e.g. OpenPack's box).
    """

    x: np.ndarray
    y: np.ndarray
    subjects: np.ndarray
    sessions: np.ndarray
    channels: tuple[ChannelSpec, ...]
    class_names: tuple[str, ...]
    rate_hz: float
    null_class: int | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def subject_ids(self) -> list[str]:
        return sorted(set(self.subjects.tolist()))

    def subset(self, index: np.ndarray | Sequence[int]) -> "WindowSet":
        index = np.asarray(index)
        return replace(self, x=self.x[index], y=self.y[index], subjects=self.subjects[index],
                       sessions=self.sessions[index],
                       annotations={k: v[index] for k, v in self.annotations.items()})

    def select(self, query: ChannelQuery | Mapping | str | None) -> "WindowSet":
        """The same windows restricted to the channels a query picks (e.g. the student's right-wrist acc)."""
        idx = ChannelQuery.parse(query).indices(self.channels)
        return replace(self, x=self.x[:, idx], channels=tuple(self.channels[i] for i in idx))

    def activity_targets(self) -> tuple[np.ndarray, list[str]]:
        """Training targets and their class names: Null is never a target, so the other classes are renumbered
        0..K-1 in order and Null windows (if any are kept) get -1."""
        keep = [c for c in range(len(self.class_names)) if c != self.null_class]
        remap = np.full(len(self.class_names), -1)
        remap[keep] = np.arange(len(keep))
        return remap[self.y], [self.class_names[c] for c in keep]

    def targets_for(self, class_names: Sequence[str]) -> np.ndarray:
        """Each window's label as an index into a model's `class_names`; -1 for Null, unlabelled windows and classes
        the model lacks (e.g. HAPT's raw postural transitions)."""
        data_labels, names = self.activity_targets()
        to_model = np.array([list(class_names).index(n) if n in class_names else -1 for n in names] + [-1])
        return to_model[data_labels]  # -1 (Null) indexes the appended -1

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.y, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts)}


def window_labels(labels: np.ndarray, starts: np.ndarray, length: int, n_classes: int, rule: str) -> np.ndarray:
    """One label per window: the most frequent sample label (ties to the lower class index) or the centre sample's."""
    if rule == "centre":
        return labels[starts + length // 2]
    # Per-class cumulative counts give every window's histogram without a Python loop over windows.
    onehot = np.zeros((len(labels) + 1, n_classes), dtype=np.int32)
    onehot[np.arange(1, len(labels) + 1), labels] = 1
    cumulative = np.cumsum(onehot, axis=0)
    return np.argmax(cumulative[starts + length] - cumulative[starts], axis=1)


def _check_alike(recordings: Sequence[Recording]) -> None:
    """One window set holds one channel layout at one rate."""
    first = recordings[0]
    for rec in recordings:
        if rec.channels != first.channels:
            raise HarkdError(f"{rec.source or rec.session}: channels differ from {first.source or first.session}")
        if rec.rate_hz != first.rate_hz:
            raise HarkdError(f"{rec.source or rec.session}: rate {rec.rate_hz} Hz differs from {first.rate_hz} Hz")


def _kept_starts(rec: Recording, config: WindowConfig, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The first sample and label of each window cut from `rec` (null windows dropped when the config says so)."""
    starts = np.arange(0, rec.signals.shape[0] - config.length + 1, config.stride)
    labels = window_labels(rec.labels, starts, config.length, n_classes, config.label_rule)
    if config.drop_null and rec.null_class is not None:
        keep = labels != rec.null_class
        return starts[keep], labels[keep]
    return starts, labels


def make_windows(recordings: Sequence[Recording], config: WindowConfig) -> WindowSet:
    """Cut every recording into windows; recordings shorter than one window contribute none."""
    if not recordings:
        raise HarkdError("no recordings to window")
    class_names = check_same_classes(recordings)
    first = recordings[0]
    _check_alike(recordings)
    xs, ys, subjects, sessions = [], [], [], []
    tracks: dict[str, list[np.ndarray]] = {k: [] for k in first.annotations}
    for rec in recordings:
        if rec.signals.shape[0] < config.length:
            continue
        starts, labels = _kept_starts(rec, config, len(class_names))
        # (T, C) -> (T - L + 1, C, L): a view, copied only for the kept starts.
        views = np.lib.stride_tricks.sliding_window_view(rec.signals, config.length, axis=0)
        xs.append(views[starts])
        ys.append(labels)
        subjects.append(np.full(len(starts), rec.subject))
        sessions.append(np.full(len(starts), rec.session))
        for name, track in rec.annotations.items():
            if name not in tracks:
                raise HarkdError(f"{rec.source or rec.session}: annotation {name!r} missing in other recordings")
            tracks[name].append(np.asarray(track)[starts + config.length // 2])
    if not xs:
        raise HarkdError(f"no recording is as long as one window ({config.length} samples)")
    return WindowSet(
        x=np.ascontiguousarray(np.concatenate(xs), dtype=np.float32),
        y=np.concatenate(ys).astype(np.int64),
        subjects=np.concatenate(subjects).astype(str),
        sessions=np.concatenate(sessions).astype(str),
        channels=first.channels,
        class_names=class_names,
        rate_hz=first.rate_hz,
        null_class=first.null_class,
        annotations={k: np.concatenate(v) for k, v in tracks.items()},
    )
