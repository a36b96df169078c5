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

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harkd import __version__
from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.data.splits import Fold
from harkd.data.windowing import WindowSet
from harkd.distill.compose import build_method
from harkd.environment import environment
from harkd.errors import HarkdError
from harkd.execution.processes import Processes
from harkd.experiment.checkpoints import UnitStore
from harkd.experiment.config import ExperimentConfig
from harkd.experiment.families import best_per_family
from harkd.experiment.fold_unit import FoldResult, FoldUnits, load_data
from harkd.experiment.folds import ExperimentData, sensor_groups
from harkd.experiment.report import format_summary_table, write_results
from harkd.experiment.progress import Heartbeat
from harkd.experiment.rows import Cost
from harkd.experiment.summary import summarise
from harkd.experiment.teacher_cache import TeacherStore
from harkd.models.base import build_model
from harkd.models.tsak import TwoStageTeacher, semantic_input_dims

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend


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


Plan = list[tuple[int, int, Fold]]  # (seed, the fold's index among the seed's folds, fold) per unit, in run order


class Runner:
    """A whole run: every (seed, fold) unit, in this process, in `jobs` worker processes or, with `ray`, as tasks on
    a Ray cluster (harkd.execution.ray_cluster); then costs (measured once per model, in this process, after
    training so the latency timings have the machine to themselves), results.json and the report."""

    heartbeat_s = 30.0  # the longest silence while units train

    def __init__(self, config: ExperimentConfig, out_dir: Path, command: str, log: Callable[[str], None] = print,
                 jobs: int | None = 1, keep_models: bool = False, threads: int | None = None,
                 overwrite: bool = False, ray: RayBackend | None = None, teachers: TeacherStore | None = None):
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
        self.teachers = teachers  # None: every teacher trained (--no-teacher-cache)

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
        self.log(format_summary_table(summarise(results["rows"])))
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
                    if (unit := store.load(seed, fold.name, FoldResult.saved)) is not None}
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
        costs = self._costs(data)  # a personalised row costs what its model costs
        rows = [row.costing(costs.get((row.role, row.model)) or costs.get(("student", row.model))
                            or costs[("teacher", row.model)]) for unit in units for row in unit.rows]
        env = environment(threads=self.threads)
        results = {"harkd_version": __version__, "started": started, "command": self.command,
                   "wall_time_s": round(wall_time_s, 1), "jobs": self.jobs, "resumed_units": resumed,
                   "machine": _machine_line(env), "environment": env, "config": self.config.raw,
                   "class_names": data.class_names, "rows": [row.to_json() for row in rows],
                   "confusion": _summed_confusions(units)}
        summary = summarise(rows)
        results["summary"] = [entry.to_json() for entry in summary]
        results["best_per_family"] = best_per_family(self.config.raw, summary)
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
        best = max((r for r in unit.rows if r.role == "student"), key=lambda r: r.macro_f1)
        return (f"[{progress}] seed {seed} {fold.describe()}: teacher {unit.rows[0].macro_f1:.3f}"
                + (" (from the teacher store)" if unit.teacher_from_store else "")
                + f", best student {best.model}/{best.name} {best.macro_f1:.3f}")

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
                store.save(seed, fold.name, [row.to_json() for row in unit.rows], unit.confusion)
                store.record_time(time.perf_counter() - clock)
                beat.log(self._unit_line(seed, fold, unit, progress()))
                bar.update()
        return [results[k] for k in range(len(plan))]

    def _units(self, plan: Plan, todo: list[int], data: ExperimentData, work: Path) -> Iterator[tuple[int, FoldResult]]:
        """(plan index, result) of each unit in `todo` as it finishes: here, in spawned worker processes, or on Ray."""
        units = {k: (plan[k][0], plan[k][2]) for k in todo}
        spec = FoldUnits(json.dumps(self.config.resolved), work, self.models,
                         None if self.teachers is None else self.teachers.root)
        if self.ray is not None:
            from harkd.execution.ray_cluster import map_on_ray

            if units:  # nothing to start Ray for when every unit is resumed
                yield from map_on_ray(self.ray, spec, units, data, work / "status", self.threads,
                                      lambda unit: f"{unit[1].name}-seed{unit[0]}")
            return
        # In this process, the windows loaded already; a spawned process loads them from the cache.
        yield from Processes(self.jobs, self.threads).map(spec, units, data if self.jobs == 1 else None)

    def _costs(self, data: ExperimentData) -> dict[tuple[str, str], Cost]:
        """Params, FLOPs and batch-1 CPU latency per window for each model of the run (the same in every fold)."""
        length = data.teacher_view.x.shape[2]
        costs = {}
        for key, (model, channels) in cost_models(self.config, data).items():
            shape = (1, channels, length)
            costs[key] = Cost(count_params(model), count_flops(model, shape),
                              cpu_latency_ms(model, shape, runs=self.config.latency_runs))
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
                   overwrite: bool = False, ray: RayBackend | None = None,
                   teachers: TeacherStore | None = None) -> dict[str, Any]:
    return Runner(config, out_dir, command, log, jobs, keep_models, threads, overwrite, ray, teachers).run()


__all__ = ["run_experiment", "check_names", "cost_models", "Runner"]
