"""The folds `harkd search-sensors` scores kits on, each with its frozen teacher.

`workers` scoring (the default): one fold per worker held out. For a leave-one-subject-out or group split these are
the split's own folds, each with its own teacher (the teachers `harkd run` trains on the same config, so the teacher
store shares them). For a split with fixed test subjects (a protocol split), and inside each outer fold of a nested
search, they are leave-one-subject-out over the outer fold's non-test subjects, distilled from the outer fold's
teacher: it never saw the outer fold's test workers; it saw the inner folds' held-out workers, whose windows never
train a student (seven teachers per outer fold would cost more than the search).
`validation` scoring (harkd 0.x before issue 25): the validation subjects of the split's first `search.folds` folds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from harkd.data.splits import Fold, fixed_split
from harkd.data.windowing import WindowSet
from harkd.errors import HarkdError
from harkd.execution.processes import Processes
from harkd.experiment.config import OneStudentSearch
from harkd.experiment.fold_unit import teacher_settings
from harkd.experiment.folds import (ExperimentData, FoldLabels, SplitSettings, Views, experiment_windows, fold_views,
                                    sensor_groups)
from harkd.experiment.teacher import TrainedTeacher, train_teacher
from harkd.experiment.teacher_cache import TeacherStore, teacher_key

SPLITS_OF_THEIR_OWN = ("loso", "groups")  # splits whose folds each hold workers out already


@dataclass
class SearchFold:
    """One fold a kit is scored on: its labels, the teacher's inputs and the frozen teacher, and which windows score
    the kit (`test`: the held-out worker's; `val`: the validation protocol's)."""

    fold: Fold
    y: FoldLabels
    teacher_inputs: Views
    teacher: TrainedTeacher
    scored: str = "test"

    @property
    def name(self) -> str:
        return self.fold.name


@dataclass
class SearchData:
    """What every trial reads (and what travels to worker processes): the teacher's windows, whose channels the kits
    select, and the folds with their teachers."""

    view: WindowSet
    class_names: list[str]
    stride: int | None
    folds: list[SearchFold]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def guiding_subjects(self) -> list[str]:
        """The subjects whose windows score the trials."""
        return sorted({str(s) for f in self.folds
                       for s in np.unique(self.view.subjects[getattr(f.fold, f.scored)])})


def load_data(config: OneStudentSearch) -> ExperimentData:
    """The windows of the teacher's channels (the kits select from them; both views are that one)."""
    windows, protocol_subjects, windowing = experiment_windows(config)
    labels, class_names = windows.activity_targets()
    view = windows.select(config.teacher_channels)
    return ExperimentData(view, view, labels, class_names, protocol_subjects, windowing, config.dataset)


class FoldTeachers:
    """Trains (or reads from the store) the teacher of a fold of the search's data."""

    def __init__(self, config: OneStudentSearch, data: ExperimentData, work: Path, log: Callable[[str], None],
                 store: TeacherStore | None, jobs: int = 1):
        self.config, self.data, self.work, self.log, self.store, self.jobs = config, data, work, log, store, jobs

    def prefill(self, folds: list[Fold]) -> None:
        """The teachers of `folds` the store lacks, trained in `jobs` processes at once and kept there (`train` then
        reads them back): a fresh store's teachers do not train one after another while the other cores wait."""
        if self.store is None or self.jobs < 2:
            return
        missing = [fold for fold in folds if not self.is_stored(fold)]
        if len(missing) < 2:
            return
        self.log(f"teachers of {len(missing)} folds, {min(self.jobs, len(missing))} at a time")
        job = TeacherJob(self.config, self.work, self.store)
        for name, val_f1 in Processes(self.jobs, threads=1).map(job, {fold.name: fold for fold in missing}):
            self.log(f"teacher {name}: val F1 {val_f1:.3f} (kept in the teacher store)")

    def is_stored(self, fold: Fold) -> bool:
        """Whether the store holds the teacher `train` would train on `fold` (the key train_teacher looks up)."""
        if self.store is None:
            return False
        inputs, y = self.inputs(fold)
        key = teacher_key(teacher_settings(self.config), [inputs.train, inputs.val, y.train, y.val],
                          sensor_groups(self.data.teacher_view.channels), self.data.n_classes, self.config.seed)
        return self.store.path(key).is_file()

    def inputs(self, fold: Fold) -> tuple[Views, FoldLabels]:
        """The teacher's windows and the labels of `fold`, as the teacher trains on them."""
        return fold_views(self.data.teacher_view, fold), FoldLabels.of(self.data.labels, fold)

    def train(self, fold: Fold) -> tuple[Views, FoldLabels, TrainedTeacher]:
        view, config = self.data.teacher_view, self.config
        inputs, y = self.inputs(fold)
        self.log(f"teacher {config.teacher.name} on {fold.describe()}")
        teacher = train_teacher(teacher_settings(config), inputs, y, sensor_groups(view.channels),
                                self.data.n_classes, self.work / fold.name, config.seed, self.store)
        self.log(f"teacher {fold.name}: val F1 {teacher.fit.best_val_f1:.3f}" + (" (from the teacher store)"
                                                                                if teacher.from_store else ""))
        return inputs, y, teacher

    def fold(self, fold: Fold, scored: str = "test") -> SearchFold:
        inputs, y, teacher = self.train(fold)
        return SearchFold(fold, y, inputs, teacher, scored)


@dataclass(frozen=True)
class TeacherJob:
    """One fold's teacher trained into the store in a worker process (a harkd.execution.processes WorkerSpec); the
    process loads the windows itself rather than receive them pickled."""

    config: OneStudentSearch
    work: Path
    store: TeacherStore

    def build(self, shared: None = None) -> Callable[[Fold], float]:
        teachers = FoldTeachers(self.config, load_data(self.config), self.work, lambda _: None, self.store)
        return lambda fold: teachers.train(fold)[2].fit.best_val_f1


def scoring_folds(config: OneStudentSearch, data: ExperimentData, teachers: FoldTeachers, protocol: str,
                  n_folds: int | None) -> list[SearchFold]:
    """The folds every kit of a (not nested) search is scored on, at most `n_folds` of them."""
    folds = data.folds(config.split, config.seed)
    if protocol == "validation":
        return [teachers.fold(f, "val") for f in distinct_validation(folds, data.teacher_view, n_folds, teachers.log)]
    if config.split.kind in SPLITS_OF_THEIR_OWN:
        teachers.prefill(folds[:n_folds])
        return [teachers.fold(f) for f in folds[:n_folds]]
    return inner_folds(folds[0], data, config.split, config.seed, teachers.train(folds[0]), n_folds)


def inner_folds(outer: Fold, data: ExperimentData, split: SplitSettings, seed: int,
                trained: tuple[Views, FoldLabels, TrainedTeacher], n_folds: int | None) -> list[SearchFold]:
    """Leave-one-subject-out over `outer`'s training and validation subjects (never its test subjects), at most
    `n_folds` folds, each distilled from `outer`'s teacher on inputs normalised as that teacher was trained."""
    view = data.teacher_view
    subjects = sorted({str(s) for s in view.subjects[np.concatenate([outer.train, outer.val])]})
    if len(subjects) < 3:
        raise HarkdError(f"search.scoring: fold {outer.name} has {len(subjects)} training subject(s) "
                         f"{subjects}; scoring on held-out workers needs 3 (one held out, one to validate, one to "
                         f"train)")
    outer_inputs, _, teacher = trained
    folds = []
    for held in subjects[:n_folds]:
        fold = fixed_split(view, [held], [s for s in subjects if s != held], val_subjects=max(1, split.val_subjects),
                           val_fraction=split.val_fraction, seed=seed, name=f"{outer.name}/{held}")
        teacher_inputs = fold_views(view, fold, outer_inputs.normaliser)
        folds.append(SearchFold(fold, FoldLabels.of(data.labels, fold), teacher_inputs,
                                teacher_on(teacher, teacher_inputs)))
    return folds


def teacher_on(teacher: TrainedTeacher, inputs: Views) -> TrainedTeacher:
    """The frozen teacher with its outputs on another fold's windows."""
    splits = ("train", "val", "test") + (("calibration",) if len(inputs.calibration) else ())
    return replace(teacher, outputs={s: teacher.label(getattr(inputs, s)) for s in splits})


def distinct_validation(folds: list[Fold], view: WindowSet, wanted: int | None,
                        log: Callable[[str], None]) -> list[Fold]:
    """The first `wanted` folds whose validation subjects are new: each fold adds subjects to score on
    (leave-one-subject-out folds often draw the same validation subject)."""
    chosen, seen = [], set()
    for fold in folds:
        subjects = set(np.unique(view.subjects[fold.val]).tolist())
        if not subjects & seen:
            chosen.append(fold)
            seen |= subjects
        if len(chosen) == wanted:
            return chosen
    log(f"only {len(chosen)} fold(s) have distinct validation subjects; the search scores on those")
    return chosen


def search_data(data: ExperimentData, folds: list[SearchFold]) -> SearchData:
    return SearchData(data.teacher_view, data.class_names, data.windowing.stride if data.windowing else None, folds)


__all__ = ["FoldTeachers", "SearchData", "SearchFold", "TeacherJob", "distinct_validation", "inner_folds", "load_data",
           "scoring_folds", "search_data", "teacher_on"]
