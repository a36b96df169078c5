"""What every command shares about folds: an experiment's windows, its folds, the two channel views (teacher and
student) and the normalised inputs of one fold. Used by `harkd run`, the head search and personalisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from harkd.data.catalog import default_windowing, load_recordings, load_windows
from harkd.data.plausibility import unit_findings
from harkd.data.protocols import get_protocol
from harkd.data.recording import ChannelQuery, ChannelSpec, Recording
from harkd.data.registry import WindowConfig
from harkd.data.splits import (Fold, Normaliser, fit_normaliser, fixed_split, group_folds, leave_one_subject_out,
                               with_calibration)
from harkd.data.windowing import WindowSet, make_windows
from harkd.errors import HarkdError

SubjectLists = tuple[tuple[str, ...] | None, tuple[str, ...] | None]


class DataSettings(Protocol):
    """The sections of a config that say which windows and folds an experiment uses (run and search configs)."""

    dataset: str
    dataset_options: dict
    windowing: WindowConfig | None
    split: "SplitSettings"


class SplitSettings(Protocol):
    kind: str
    val_subjects: int
    val_fraction: float
    test_subjects: tuple[str, ...]
    train_subjects: tuple[str, ...] | None
    protocol: str | None
    group_by: str | None
    n_folds: int
    folds: tuple[str, ...] | None
    calibration: float


def experiment_windows(config: DataSettings) -> tuple[WindowSet, SubjectLists, WindowConfig]:
    """The windows, for a protocol split its (train, test) subject lists ((None, None) otherwise), and the windowing
    they were cut with."""
    if config.split.kind != "protocol":
        windowing = config.windowing or default_windowing(config.dataset)
        return load_windows(config.dataset, windowing, config.dataset_options), (None, None), windowing
    protocol = get_protocol(config.split.protocol)
    if protocol.dataset != config.dataset:
        raise HarkdError(f"split.protocol {config.split.protocol!r} applies to dataset {protocol.dataset!r}, "
                         f"not {config.dataset!r}")
    cut = protocol.build(load_recordings(config.dataset, config.dataset_options))
    windowing = config.windowing or cut.windowing
    return make_windows(cut.recordings, windowing), (cut.train_subjects, cut.test_subjects), windowing


def experiment_recordings(config: DataSettings) -> list[Recording]:
    """The recordings the experiment's windows are cut from (for a protocol split, the protocol's cut)."""
    recordings = load_recordings(config.dataset, config.dataset_options)
    if config.split.kind != "protocol":
        return recordings
    return get_protocol(config.split.protocol).build(recordings).recordings


def make_folds(windows: WindowSet, split: SplitSettings, seed: int, protocol_subjects: SubjectLists) -> list[Fold]:
    """The split's folds (only those `split.folds` names), each with its calibration windows when asked for."""
    folds = _all_folds(windows, split, seed, protocol_subjects)
    if split.folds is not None:
        wanted = set(split.folds)
        folds = [f for f in folds if f.name in wanted or wanted & set(f.test_subjects)]
        if not folds:
            raise HarkdError(f"split.folds {sorted(wanted)} match no fold; folds: "
                             f"{[f.name for f in _all_folds(windows, split, seed, protocol_subjects)]}")
    if split.calibration:
        folds = [with_calibration(windows, fold, split.calibration) for fold in folds]
    return folds


def _all_folds(windows: WindowSet, split: SplitSettings, seed: int, protocol_subjects: SubjectLists) -> list[Fold]:
    common = {"val_fraction": split.val_fraction, "seed": seed}
    if split.kind == "loso":
        return leave_one_subject_out(windows, val_subjects=split.val_subjects, **common)
    if split.kind == "fixed":
        return [fixed_split(windows, split.test_subjects, split.train_subjects, val_subjects=split.val_subjects,
                            **common)]
    if split.kind == "protocol":
        train, test = protocol_subjects
        return [fixed_split(windows, test, train, val_subjects=split.val_subjects, name=split.protocol, **common)]
    return group_folds(windows, split.group_by, split.n_folds, **common)


def sensor_groups(channels: tuple[ChannelSpec, ...]) -> list[list[int]]:
    """One token per (sensor or position, modality): the unit TSAK's attention relates across the body."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(channels):
        groups.setdefault((c.sensor or c.position, c.modality), []).append(i)
    return list(groups.values())


@dataclass
class Views:
    """Normalised inputs of one channel view for one fold."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    calibration: torch.Tensor
    normaliser: Normaliser  # fitted on the training windows; kept models carry it


def fold_views(windows: WindowSet, fold: Fold, normaliser: Normaliser | None = None) -> Views:
    """The fold's windows normalised by the statistics of its training windows (or by `normaliser`: an outer fold's,
    for a model trained on that fold)."""
    norm = normaliser or fit_normaliser(windows, fold)  # training windows only
    return Views(*(torch.from_numpy(norm(windows.x[idx]))
                   for idx in (fold.train, fold.val, fold.test, fold.calibration)), normaliser=norm)


@dataclass
class FoldLabels:
    """The activity targets of one fold's splits (Null is never a target)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor

    @classmethod
    def of(cls, labels: np.ndarray, fold: Fold) -> "FoldLabels":
        return cls(*(torch.from_numpy(labels[idx]) for idx in (fold.train, fold.val, fold.test)))


@dataclass
class ExperimentData:
    """What every fold of an experiment reads: the teacher's and the student's channel views of the same windows,
    the activity targets, the class names and, for a protocol split, its subject lists."""

    teacher_view: WindowSet
    student_view: WindowSet
    labels: np.ndarray
    class_names: list[str]
    protocol_subjects: SubjectLists
    windowing: WindowConfig | None = None  # what the windows were cut with (kept models record its stride)
    dataset: str = ""

    @classmethod
    def load(cls, config: DataSettings, teacher_channels: ChannelQuery, student_channels: ChannelQuery
             ) -> "ExperimentData":
        windows, protocol_subjects, windowing = experiment_windows(config)
        labels, class_names = windows.activity_targets()
        return cls(windows.select(teacher_channels), windows.select(student_channels), labels, class_names,
                   protocol_subjects, windowing, config.dataset)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def unit_warnings(self) -> list[str]:
        """Sensors whose numbers do not fit their units (plausibility.unit_findings), checked before training."""
        lines = [f"{self.dataset}: {line}" for view in (self.teacher_view, self.student_view)
                 for line in unit_findings(view.x, view.channels)]
        return list(dict.fromkeys(lines))

    def folds(self, split: SplitSettings, seed: int) -> list[Fold]:
        return make_folds(self.teacher_view, split, seed, self.protocol_subjects)


__all__ = ["ExperimentData", "FoldLabels", "Views", "experiment_recordings", "experiment_windows", "fold_views",
           "make_folds",
           "sensor_groups"]
