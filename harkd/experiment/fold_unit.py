"""One (seed, fold) unit of a run: the fold's inputs, the teacher stage, every student with every method, the
personalisation stage; kept models written as bundles. `FoldUnits` is the picklable spec a backend
(harkd.execution) builds the unit's worker from, in this process, in a spawned one or on a Ray node."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from harkd import __version__
from harkd.data.recording import Recording
from harkd.data.splits import Fold
from harkd.data.windowing import WindowSet
from harkd.experiment.config import ExperimentConfig, ModelSpec, SharedConfig, parse_config
from harkd.experiment.folds import ExperimentData, FoldLabels, Views, experiment_recordings, fold_views, sensor_groups
from harkd.experiment.personalised import KeptStudent, Personaliser
from harkd.experiment.progress import unit_status
from harkd.experiment.rows import ResultRow, rows_of
from harkd.experiment.scoring import Scorer
from harkd.experiment.students import Sources, train_student
from harkd.experiment.teacher import TeacherSettings, TrainedTeacher, semantic_inputs, train_teacher
from harkd.experiment.teacher_cache import TeacherStore
from harkd.models.bundle import ModelBundle


def load_data(cfg: ExperimentConfig) -> ExperimentData:
    return ExperimentData.load(cfg, cfg.teacher_channels, cfg.student_channels)


def teacher_settings(cfg: SharedConfig) -> TeacherSettings:
    """The teacher a run or search trains (with no semantic classifier in the head search)."""
    return TeacherSettings(cfg.teacher, cfg.teacher_train, cfg.semantic, cfg.semantic_train)


@dataclass
class FoldResult:
    """One (seed, fold) unit's rows (without costs: the parent measures those once) and confusion matrices."""

    rows: list[ResultRow]
    confusion: dict[str, np.ndarray]
    teacher_from_store: bool = False  # its teacher was read from the teacher store, not trained

    @classmethod
    def saved(cls, rows: list[dict], confusion: dict[str, np.ndarray]) -> FoldResult:
        """A unit an earlier invocation finished, as its unit store kept it."""
        return cls(rows_of(rows), confusion)


class FoldRunner:
    """Trains one (seed, fold) unit: the teacher stage, then every student with every method; with `models` set,
    each trained teacher and student is kept there as a bundle (harkd.deploy)."""

    def __init__(self, cfg: ExperimentConfig, data: ExperimentData, work: Path, models: Path | None = None,
                 teachers: TeacherStore | None = None):
        self.cfg, self.data, self.work, self.models, self.teachers = cfg, data, work, models, teachers
        self.teacher_view = (cfg.teacher_channels.describe(), len(data.teacher_view.channels))
        self.student_view = (cfg.student_channels.describe(), len(data.student_view.channels))
        self._cut_from: list[Recording] | None = None

    def run(self, seed: int, fold: Fold) -> FoldResult:
        cfg, data = self.cfg, self.data
        y = FoldLabels.of(data.labels, fold)
        xt, xs = fold_views(data.teacher_view, fold), fold_views(data.student_view, fold)
        score = Scorer(cfg.dataset, fold, seed, y.test.numpy(), data.n_classes)
        work = self.work / f"{fold.name}-seed{seed}"
        groups = sensor_groups(data.teacher_view.channels)
        teacher = train_teacher(teacher_settings(cfg), xt, y, groups, data.n_classes, work, seed, self.teachers)
        rows = self._teacher_rows(teacher, xt, score, groups)
        sources = Sources(teacher, xt, xs)  # its self teacher is each student's own: `none` runs first (config rule)
        kept, kept_bundles = [], {}
        for spec in cfg.students:
            for method in cfg.methods:
                result = train_student(spec, method, sources, y, data.n_classes, cfg.student_train,
                                       work / f"{spec.label}-{method.name}", seed)
                rows.append(score.row("student", spec.label, method.name, self.student_view, result.model, xs.test,
                                      result))
                kept_bundles[(spec.label, method.name)] = self._keep(result.model, spec, data.student_view, xs, fold,
                                                                     rows[-1])
                kept.append(KeptStudent(spec.label, method.name, result.model))
        if cfg.personalise is not None:
            personaliser = Personaliser(cfg.personalise, data, self._recordings(), (xt, xs), y.train, teacher,
                                        cfg.teacher.name, (self.teacher_view, self.student_view), seed,
                                        work / "personalise", None if self.models is None else
                                        partial(self._keep_personalised, kept_bundles, fold, seed))
            chosen = cfg.personalise.students
            rows += personaliser.rows(fold, [k for k in kept if chosen is None or k.method in chosen], score)
        return FoldResult(rows, score.confusions, teacher.from_store)

    def _recordings(self) -> list[Recording]:
        """What the run's windows were cut from, read once per process (calibration sessions are cut from them)."""
        if self._cut_from is None:
            self._cut_from = experiment_recordings(self.cfg)
        return self._cut_from

    def _teacher_rows(self, teacher: TrainedTeacher, xt: Views, score: Scorer,
                      groups: list[list[int]]) -> list[ResultRow]:
        cfg = self.cfg
        rows = [score.row("teacher", cfg.teacher.name, "-", self.teacher_view, teacher.model, xt.test, teacher.fit)]
        self._keep(teacher.model, cfg.teacher, self.data.teacher_view, xt, score.fold, rows[0], groups,
                   None if teacher.semantic is None else teacher.semantic.semantic)
        if teacher.semantic is not None:
            rows.append(score.row("semantic", cfg.semantic.name, "-", self.teacher_view, teacher.semantic,
                                  semantic_inputs(teacher, "test"), teacher.semantic_fit))
        return rows

    def _keep(self, model: nn.Module, spec: ModelSpec, view: WindowSet, views: Views, fold: Fold,
              row: ResultRow, channel_groups: list[list[int]] | None = None,
              semantic: nn.Module | None = None) -> ModelBundle | None:
        """The model as a bundle in OUT/models/<fold>-seed<seed>/ (returned); a TSAK teacher's carries its semantic
        classifier."""
        if self.models is None:
            return None
        name = row.role if row.role == "teacher" else f"{row.role}-{row.model}-{row.name}"
        bundle = ModelBundle.of(model, spec.name, spec.params, view.channels, self.data.class_names, view.x.shape[2],
                                view.rate_hz, views.normaliser, channel_groups, dataset=self.cfg.dataset,
                                fold=fold.name, test_subjects=list(fold.test_subjects), seed=row.seed,
                                data=self._data_sections(),
                                role=row.role, method=row.name, macro_f1=row.macro_f1, accuracy=row.accuracy,
                                harkd_version=__version__)
        bundle.stride = self.data.windowing.stride if self.data.windowing else None
        if semantic is not None:
            bundle = bundle.with_semantic(semantic, self.cfg.semantic.name, self.cfg.semantic.params)
        bundle.save(self.models / f"{fold.name}-seed{row.seed}" / f"{name.replace('/', '_')}.pt")
        return bundle

    def _data_sections(self) -> dict[str, Any]:
        """What rebuilds the run's windows and folds for a kept model (its int8 export scores the fold's test)."""
        return {key: self.cfg.resolved[key] for key in ("dataset", "dataset_options", "windowing", "split")}

    def _keep_personalised(self, bundles: dict[tuple[str, str], ModelBundle], fold: Fold, seed: int,
                           student: KeptStudent, subject: str, model: nn.Module, report: dict[str, Any]) -> None:
        """A worker's shipped student as OUT/models/<fold>-seed<seed>/personalised-<model>-<method>-<worker>.pt: the
        kept student's bundle with the personalised weights and the session's report in its provenance."""
        name = f"personalised-{student.label}-{student.method}-{subject}".replace("/", "_")
        bundles[(student.label, student.method)].personalised(model, report).save(
            self.models / f"{fold.name}-seed{seed}" / f"{name}.pt")


@functools.lru_cache(maxsize=1)
def _config_of(resolved_json: str) -> ExperimentConfig:
    """A worker process's run config, parsed once from the resolved config it was sent."""
    return parse_config(json.loads(resolved_json), where="the run's resolved config")


@functools.lru_cache(maxsize=1)
def _data_of(resolved_json: str) -> ExperimentData:
    """A worker process's windows (from the window cache), loaded once for the units it trains."""
    return load_data(_config_of(resolved_json))


@dataclass(frozen=True)
class FoldUnits:
    """What a worker needs to train a run's units, as plain data: the run's resolved config as JSON
    (ExperimentConfig.resolved: the user's raw config is never parsed again), its work folder, where kept models go,
    and the teacher store's folder (None: every teacher trained)."""

    resolved_json: str
    work: Path
    models: Path | None = None
    teachers: Path | None = None

    @property
    def kept_folder(self) -> Path | None:
        return self.models

    def build(self, data: ExperimentData | None = None) -> Callable[[tuple[int, Fold]], FoldResult]:
        runner = FoldRunner(_config_of(self.resolved_json), data or _data_of(self.resolved_json), self.work,
                            self.models, None if self.teachers is None else TeacherStore(self.teachers))

        def unit(seed_and_fold: tuple[int, Fold]) -> FoldResult:
            with unit_status(self.work):  # the run's heartbeat reads each epoch's line
                return runner.run(*seed_and_fold)

        return unit

    def on_node(self, work: Path) -> "FoldUnits":
        """The same units on a Ray node: its own work folder, kept models under it (they travel back)."""
        return replace(self, work=work, models=None if self.models is None else work / "kept")


__all__ = ["FoldResult", "FoldRunner", "FoldUnits", "load_data", "teacher_settings"]
