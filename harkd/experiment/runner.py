"""`harkd run`: for every seed and fold, train the teacher, its semantic classifier (TSAK stage 2) and each student
with each KD method; write results.json (one row per fold, seed, role, model, method) and report.md beside it.

A (seed, fold) unit composes the stages: the fold's inputs (harkd.experiment.folds), the teacher stage
(harkd.experiment.teacher: the frozen teacher and its outputs, computed once, so a student's epoch costs what the
student costs), and the student stage (harkd.experiment.students, with each method's training set built by
harkd.train.training_sets).

Each finished (seed, fold) unit is kept in OUT/.units/ until the run ends, so the same command run again after an
interruption trains only the missing units (harkd.experiment.checkpoints).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harkd import __version__
from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.data.recording import Recording
from harkd.data.splits import Fold
from harkd.data.windowing import WindowSet
from harkd.models.bundle import ModelBundle
from harkd.distill.compose import build_method
from harkd.environment import environment
from harkd.errors import HarkdError
from harkd.experiment.checkpoints import UnitStore
from harkd.experiment.config import ExperimentConfig, ModelSpec, parse_config
from harkd.experiment.families import best_per_family
from harkd.experiment.folds import (ExperimentData, FoldLabels, Views, experiment_recordings, fold_views,
                                    sensor_groups)
from harkd.experiment.report import format_summary_table, write_results
from harkd.experiment.personalised import KeptStudent, Personaliser
from harkd.experiment.progress import Heartbeat, status_hook
from harkd.experiment.scoring import Scorer
from harkd.experiment.students import Sources, train_student
from harkd.experiment.summary import summarise
from harkd.experiment.teacher import TeacherSettings, TrainedTeacher, semantic_inputs, train_teacher
from harkd.models.base import build_model
from harkd.models.tsak import TwoStageTeacher, semantic_input_dims
from harkd.train.engine import set_epoch_hook

if TYPE_CHECKING:
    from harkd.experiment.ray_backend import RayBackend


def check_names(config: ExperimentConfig) -> None:
    """Build every model and method once on toy shapes, so a wrong name or option fails before any training."""
    teacher = build_model(config.teacher.name, 6, 2, [[0, 1, 2], [3, 4, 5]], **config.teacher.params)
    if (dims := semantic_input_dims(teacher.rep_dims)) is not None:
        build_model(config.semantic.name, sum(dims), 2, **config.semantic.params)
    for spec in config.students:
        student = build_model(spec.name, 3, 2, **spec.params)
        personalise = () if config.personalise is None else (config.personalise.method,)
        for method in (*config.methods, *personalise):
            source = student if method.teacher == "self" else teacher
            build_method(method, student.rep_dims, source.rep_dims, 2, student.map_dims, source.map_dims)


def load_data(cfg: ExperimentConfig) -> ExperimentData:
    return ExperimentData.load(cfg, cfg.teacher_channels, cfg.student_channels)


def teacher_settings(cfg: ExperimentConfig) -> TeacherSettings:
    return TeacherSettings(cfg.teacher, cfg.teacher_train, cfg.semantic, cfg.semantic_train)


@dataclass
class FoldResult:
    """One (seed, fold) unit's rows (without costs: the parent measures those once) and confusion matrices."""

    rows: list[dict]
    confusion: dict[str, np.ndarray]


class FoldRunner:
    """Trains one (seed, fold) unit: the teacher stage, then every student with every method; with `models` set,
    each trained teacher and student is kept there as a bundle (harkd.deploy)."""

    def __init__(self, cfg: ExperimentConfig, data: ExperimentData, work: Path, models: Path | None = None):
        self.cfg, self.data, self.work, self.models = cfg, data, work, models
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
        teacher = train_teacher(teacher_settings(cfg), xt, y, groups, data.n_classes, work, seed)
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
        return FoldResult(rows, score.confusions)

    def _recordings(self) -> list[Recording]:
        """What the run's windows were cut from, read once per process (calibration sessions are cut from them)."""
        if self._cut_from is None:
            self._cut_from = experiment_recordings(self.cfg)
        return self._cut_from

    def _teacher_rows(self, teacher: TrainedTeacher, xt: Views, score: Scorer,
                      groups: list[list[int]]) -> list[dict[str, Any]]:
        cfg = self.cfg
        rows = [score.row("teacher", cfg.teacher.name, "-", self.teacher_view, teacher.model, xt.test, teacher.fit)]
        self._keep(teacher.model, cfg.teacher, self.data.teacher_view, xt, score.fold, rows[0], groups,
                   None if teacher.semantic is None else teacher.semantic.semantic)
        if teacher.semantic is not None:
            rows.append(score.row("semantic", cfg.semantic.name, "-", self.teacher_view, teacher.semantic,
                                  semantic_inputs(teacher, "test"), teacher.semantic_fit))
        return rows

    def _keep(self, model: nn.Module, spec: ModelSpec, view: WindowSet, views: Views, fold: Fold,
              row: dict[str, Any], channel_groups: list[list[int]] | None = None,
              semantic: nn.Module | None = None) -> ModelBundle | None:
        """The model as a bundle in OUT/models/<fold>-seed<seed>/ (returned); a TSAK teacher's carries its semantic
        classifier."""
        if self.models is None:
            return None
        name = row["role"] if row["role"] == "teacher" else f"{row['role']}-{row['model']}-{row['method']}"
        bundle = ModelBundle.of(model, spec.name, spec.params, view.channels, self.data.class_names, view.x.shape[2],
                                view.rate_hz, views.normaliser, channel_groups, dataset=self.cfg.dataset,
                                fold=fold.name, test_subjects=list(fold.test_subjects), seed=row["seed"],
                                data=self._data_sections(),
                                role=row["role"], method=row["method"], macro_f1=row["macro_f1"],
                                accuracy=row["accuracy"], harkd_version=__version__)
        bundle.stride = self.data.windowing.stride if self.data.windowing else None
        if semantic is not None:
            bundle = bundle.with_semantic(semantic, self.cfg.semantic.name, self.cfg.semantic.params)
        bundle.save(self.models / f"{fold.name}-seed{row['seed']}" / f"{name.replace('/', '_')}.pt")
        return bundle

    def _data_sections(self) -> dict[str, Any]:
        """What rebuilds the run's windows and folds for a kept model (its int8 export scores the fold's test)."""
        return {key: self.cfg.raw[key] for key in ("dataset", "dataset_options", "windowing", "split")
                if key in self.cfg.raw}

    def _keep_personalised(self, bundles: dict[tuple[str, str], ModelBundle], fold: Fold, seed: int,
                           student: KeptStudent, subject: str, model: nn.Module, report: dict[str, Any]) -> None:
        """A worker's shipped student as OUT/models/<fold>-seed<seed>/personalised-<model>-<method>-<worker>.pt: the
        kept student's bundle with the personalised weights and the session's report in its provenance."""
        name = f"personalised-{student.label}-{student.method}-{subject}".replace("/", "_")
        bundles[(student.label, student.method)].personalised(model, report).save(
            self.models / f"{fold.name}-seed{seed}" / f"{name}.pt")


# One FoldRunner per worker process, built once by the pool's initializer (the windows load from the cache).
_WORKER: FoldRunner | None = None


def _init_worker(raw: dict, work: Path, threads: int, models: Path | None) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    set_epoch_hook(status_hook(work))
    cfg = parse_config(raw)
    _WORKER = FoldRunner(cfg, load_data(cfg), work, models)


def _run_unit(seed: int, fold_index: int) -> FoldResult:
    assert _WORKER is not None
    return _WORKER.run(seed, _WORKER.data.folds(_WORKER.cfg.split, seed)[fold_index])


Plan = list[tuple[int, int, Fold]]  # (seed, the fold's index among the seed's folds, fold) per unit, in run order


class Runner:
    """A whole run: every (seed, fold) unit, in this process, in `jobs` worker processes or, with `ray`, as tasks on
    a Ray cluster (harkd.experiment.ray_backend); then costs (measured once per model, in this process, after
    training so the latency timings have the machine to themselves), results.json and the report."""

    heartbeat_s = 30.0  # the longest silence while units train

    def __init__(self, config: ExperimentConfig, out_dir: Path, command: str, log: Callable[[str], None] = print,
                 jobs: int | None = 1, keep_models: bool = False, threads: int | None = None,
                 overwrite: bool = False, ray: RayBackend | None = None):
        if jobs is not None and jobs < 1:
            raise HarkdError(f"--jobs must be at least 1, got {jobs}")
        if ray is not None and jobs not in (None, 1):
            raise HarkdError(f"--jobs applies to --backend local; on Ray, --cpus-per-unit ({ray.cpus:g}) sets how "
                             f"many units a node trains at once")
        if threads is not None and threads < 1:
            raise HarkdError(f"--threads must be at least 1, got {threads}")
        self.config, self.out_dir, self.command, self.log, self.jobs = config, Path(out_dir), command, log, jobs
        self.models = self.out_dir / "models" if keep_models or config.keep_models else None
        # One torch thread per process by default: on two threads a process ran 2.7x slower than on one when another
        # job took a core (benchmarks/bench_threads.py). Cores go to processes instead.
        self.threads = threads or (1 if ray is None else ray.threads)  # a Ray task's threads: the CPUs it holds
        self.overwrite = overwrite
        self.ray = ray

    def run(self) -> dict[str, Any]:
        cfg = self.config
        check_names(cfg)
        self._refuse_finished_run()
        started, clock = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
        data = load_data(cfg)
        self.log(f"{cfg.dataset}: {len(data.labels)} windows, {data.n_classes} classes; teacher "
                 f"{self.describe_view(data.teacher_view, cfg.teacher_channels)}, student "
                 f"{self.describe_view(data.student_view, cfg.student_channels)}")
        for line in data.unit_warnings():
            self.log(f"warning: {line}")
        plan = [(seed, i, fold) for seed in cfg.seeds for i, fold in enumerate(data.folds(cfg.split, seed))]
        store = UnitStore(self.out_dir, cfg.raw)
        store.open()
        finished = self._finished_units(plan, store)
        if self.ray is None:  # None: one process per core, as many as there are units to train
            self.jobs = self.jobs or min(os.cpu_count() or 1, max(1, len(plan) - len(finished)))
        with tempfile.TemporaryDirectory(prefix="harkd-run-", ignore_cleanup_errors=True) as work:  # Ctrl-C too
            units = self._train(plan, data, Path(work), finished, store, clock)
        results = self._results(units, data, started, sum(store.previous_s) + time.perf_counter() - clock,
                                len(finished))
        write_results(results, self.out_dir)
        store.clear()
        self.log(format_summary_table(results["summary"]))
        self._log_models(plan)
        return results

    @staticmethod
    def describe_view(view: WindowSet, query: Any) -> str:
        return f"{len(view.channels)} channels ({query.describe()})"

    def _refuse_finished_run(self) -> None:
        """A finished run's results are never replaced silently; an unfinished one (OUT/.units) resumes."""
        if (self.out_dir / "results.json").exists() and not self.overwrite:
            raise HarkdError(f"{self.out_dir} holds a finished run (results.json); use another --out, or --overwrite "
                             f"to replace it")

    def _finished_units(self, plan: Plan, store: UnitStore) -> dict[int, FoldResult]:
        """Units an interrupted invocation finished; on a fresh start, the models of an earlier run are removed (they
        would not match these results)."""
        finished = {k: unit for k, (seed, _, fold) in enumerate(plan)
                    if (unit := store.load(seed, fold.name, FoldResult)) is not None}
        if finished:
            self.log(f"resuming: {len(finished)} of {len(plan)} (seed, fold) units already finished in {store.dir}")
        elif (self.out_dir / "models").exists():
            shutil.rmtree(self.out_dir / "models")
            self.log(f"removed the models of the previous run in {self.out_dir / 'models'}")
        return finished

    def _results(self, units: list[FoldResult], data: ExperimentData, started: str, wall_time_s: float,
                 resumed: int) -> dict[str, Any]:
        """results.json's content. `wall_time_s` sums every invocation when the run was resumed (`resumed_units`
        finished in earlier ones)."""
        rows = [row for unit in units for row in unit.rows]
        costs = self._costs(data)
        for row in rows:  # a personalised row costs what its model costs
            row.update(costs.get((row["role"], row["model"])) or costs.get(("student", row["model"]))
                       or costs[("teacher", row["model"])])
        env = environment(threads=self.threads)
        results = {"harkd_version": __version__, "started": started, "command": self.command,
                   "wall_time_s": round(wall_time_s, 1), "jobs": self.jobs, "resumed_units": resumed,
                   "machine": _machine_line(env), "environment": env, "config": self.config.raw,
                   "class_names": data.class_names, "rows": rows, "confusion": _summed_confusions(units)}
        results["summary"] = summarise(rows)
        results["best_per_family"] = best_per_family(self.config.raw, results["summary"])
        return results

    def _log_models(self, plan: Plan) -> None:
        if self.models is None:
            return
        missing = [f"{fold.name}-seed{seed}" for seed, _, fold in plan
                   if not (self.models / f"{fold.name}-seed{seed}").is_dir()]
        files = list(self.models.glob("*/*.pt"))
        kinds = Counter(f.name.split("-")[0].removesuffix(".pt") for f in files)
        self.log(f"kept {len(files)} models in {self.models} ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}"
                 f"; {sum(f.stat().st_size for f in files) / 1e6:.1f} MB; layout: docs/deploy.md)"
                 + (f"; none for {', '.join(missing)} (trained by an invocation without --keep-models)"
                    if missing else ""))

    @staticmethod
    def _unit_line(seed: int, fold: Fold, unit: FoldResult, progress: str) -> str:
        best = max((r for r in unit.rows if r["role"] == "student"), key=lambda r: r["macro_f1"])
        return (f"[{progress}] seed {seed} {fold.describe()}: teacher {unit.rows[0]['macro_f1']:.3f}, best student "
                f"{best['model']}/{best['method']} {best['macro_f1']:.3f}")

    def _train(self, plan: Plan, data: ExperimentData, work: Path, finished: dict[int, FoldResult],
               store: UnitStore, clock: float) -> list[FoldResult]:
        """Every unit's result, in plan order whatever order they finish in; units in `finished` are not trained
        again, and each newly trained one goes to `store` as soon as it finishes (`clock`: the run's start)."""
        results = dict(finished)
        todo = [k for k in range(len(plan)) if k not in finished]
        progress = lambda: f"{len(results)}/{len(plan)}, {(time.perf_counter() - clock) / 60:.0f} min"  # noqa: E731
        with Heartbeat(work, self.log, progress, self.heartbeat_s) as beat, \
                tqdm(total=len(plan), initial=len(finished), desc="folds x seeds", unit="fold", disable=None) as bar:
            for k, unit in self._units(plan, todo, data, work):
                results[k] = unit
                seed, _, fold = plan[k]
                store.save(seed, fold.name, unit.rows, unit.confusion)
                store.record_time(time.perf_counter() - clock)
                beat.log(self._unit_line(seed, fold, unit, progress()))
                bar.update()
        return [results[k] for k in range(len(plan))]

    def _units(self, plan: Plan, todo: list[int], data: ExperimentData, work: Path) -> Iterator[tuple[int, FoldResult]]:
        """(plan index, result) of each unit in `todo` as it finishes: here, in spawned worker processes, or on Ray."""
        if self.ray is not None:
            from harkd.experiment.ray_backend import train_units_on_ray

            if todo:  # nothing to start Ray for when every unit is resumed
                units = {k: (plan[k][0], plan[k][2]) for k in todo}
                yield from train_units_on_ray(self.ray, self.config.raw, data, units, self.threads, self.models,
                                              work / "status")
            return
        if self.jobs == 1:
            runner, threads = FoldRunner(self.config, data, work, self.models), torch.get_num_threads()
            set_epoch_hook(status_hook(work))
            torch.set_num_threads(self.threads)
            try:
                yield from ((k, runner.run(plan[k][0], plan[k][2])) for k in todo)
            finally:
                set_epoch_hook(None)
                torch.set_num_threads(threads)
            return
        if not todo:
            return
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.jobs, mp_context=spawn, initializer=_init_worker,
                                 initargs=(self.config.raw, work, self.threads, self.models)) as pool:
            futures = {pool.submit(_run_unit, plan[k][0], plan[k][1]): k for k in todo}
            try:
                yield from ((futures[future], future.result()) for future in as_completed(futures))
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise

    def _costs(self, data: ExperimentData) -> dict[tuple[str, str], dict[str, float]]:
        """Params, FLOPs and batch-1 CPU latency per window for each model of the run (the same in every fold)."""
        length = data.teacher_view.x.shape[2]
        costs = {}
        for key, (model, channels) in cost_models(self.config, data).items():
            shape = (1, channels, length)
            costs[key] = {"params": count_params(model), "flops": count_flops(model, shape),
                          "latency_ms_cpu": cpu_latency_ms(model, shape, runs=self.config.latency_runs)}
        return costs


def cost_models(cfg: ExperimentConfig, data: ExperimentData) -> dict[tuple[str, str], tuple[nn.Module, int]]:
    """Each (role, model) of a run, freshly built in eval mode, with its input channel count; the semantic row's
    model is the teacher with its semantic classifier (what SC-Logit's targets cost)."""
    n_teacher, n_student = len(data.teacher_view.channels), len(data.student_view.channels)
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher.name, n_teacher, data.n_classes, sensor_groups(data.teacher_view.channels),
                          **cfg.teacher.params).eval()
    models = {("teacher", cfg.teacher.name): (teacher, n_teacher)}
    if (dims := semantic_input_dims(teacher.rep_dims)) is not None:
        semantic = build_model(cfg.semantic.name, sum(dims), data.n_classes, **cfg.semantic.params)
        models[("semantic", cfg.semantic.name)] = (TwoStageTeacher(teacher, semantic).eval(), n_teacher)
    for spec in cfg.students:
        models[("student", spec.label)] = (build_model(spec.name, n_student, data.n_classes, **spec.params).eval(),
                                           n_student)
    return models


def _machine_line(env: dict[str, Any]) -> str:
    """The report's one-line summary of `environment()`."""
    return (f"{env['cpu']}, {env['cpus']} CPUs, {env['threads_per_process']} thread(s) per process, torch "
            f"{env['versions']['torch']}, {'CUDA ' + env['cuda_device'] if env['cuda_device'] else 'CPU only'}")


def _summed_confusions(units: list[FoldResult]) -> dict[str, list]:
    confusions: dict[str, np.ndarray] = {}
    for unit in units:
        for key, matrix in unit.confusion.items():
            confusions[key] = confusions.get(key, 0) + matrix
    return {k: v.tolist() for k, v in confusions.items()}


def run_experiment(config: ExperimentConfig, out_dir: Path, command: str = "", log: Callable[[str], None] = print,
                   jobs: int | None = 1, keep_models: bool = False, threads: int | None = None,
                   overwrite: bool = False, ray: RayBackend | None = None) -> dict[str, Any]:
    return Runner(config, out_dir, command, log, jobs, keep_models, threads, overwrite, ray).run()


__all__ = ["run_experiment", "check_names", "cost_models", "load_data", "FoldRunner", "Runner"]
