"""`harkd run`: for every seed and fold, train the teacher, its semantic classifier (TSAK stage 2) and each student
with each KD method; write results.json (one row per fold, seed, role, model, method) and report.md beside it.

The teacher's outputs on the training windows are computed once per fold and seed and handed to every student run,
so a student's epoch costs what the student costs. A `teacher: self` method distils from the student trained alone
(the method with no terms listed before it) instead of the teacher: self-distillation, or with calibration
self-training on the student's own soft pseudo-labels.

Each finished (seed, fold) unit is kept in OUT/.units/ until the run ends, so the same command run again after an
interruption trains only the missing units (harkd.experiment.checkpoints).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from harkd import __version__
from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.data.catalog import load_recordings, load_windows
from harkd.data.protocols import get_protocol
from harkd.data.recording import ChannelSpec
from harkd.data.splits import (Fold, Normaliser, fit_normaliser, fixed_split, group_folds, leave_one_subject_out,
                               with_calibration)
from harkd.data.windowing import WindowSet, make_windows
from harkd.deploy.bundle import ModelBundle
from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.experiment.checkpoints import UnitStore
from harkd.experiment.config import ExperimentConfig, MethodSpec, ModelSpec, SplitSpec, parse_config
from harkd.experiment.families import best_per_family
from harkd.experiment.report import format_summary_table, write_results
from harkd.experiment.summary import summarise
from harkd.metrics import confusion
from harkd.models.base import ModelOutput, build_model
from harkd.models.tsak import REP_NAMES, TwoStageTeacher
from harkd.train.engine import FitResult, TeacherTargets, concat_targets, evaluate, fit, predict
from harkd.train.mixup import Mixes


def experiment_windows(config: ExperimentConfig) -> tuple[WindowSet, tuple[str, ...] | None, tuple[str, ...] | None]:
    """The windows, and for a protocol split its train/test subject lists."""
    if config.split.kind == "protocol":
        spec = get_protocol(config.split.protocol)
        if spec.dataset != config.dataset:
            raise HarkdError(f"split.protocol {config.split.protocol!r} applies to dataset {spec.dataset!r}, "
                             f"not {config.dataset!r}")
        protocol = spec.build(load_recordings(config.dataset, config.dataset_options))
        windowing = config.windowing or protocol.windowing
        return make_windows(protocol.recordings, windowing), protocol.train_subjects, protocol.test_subjects
    return load_windows(config.dataset, config.windowing, config.dataset_options), None, None


def make_folds(windows: WindowSet, split: SplitSpec, seed: int,
               protocol_subjects: tuple[tuple[str, ...] | None, tuple[str, ...] | None]) -> list[Fold]:
    common = {"val_fraction": split.val_fraction, "seed": seed}
    if split.kind == "loso":
        folds = leave_one_subject_out(windows, val_subjects=split.val_subjects, **common)
    elif split.kind == "fixed":
        folds = [fixed_split(windows, split.test_subjects, split.train_subjects, val_subjects=split.val_subjects,
                             **common)]
    elif split.kind == "protocol":
        train, test = protocol_subjects
        folds = [fixed_split(windows, test, train, val_subjects=split.val_subjects, name=split.protocol, **common)]
    else:
        folds = group_folds(windows, split.group_by, split.n_folds, **common)
    if split.folds is not None:
        wanted = set(split.folds)
        chosen = [f for f in folds if f.name in wanted or wanted & set(f.test_subjects)]
        if not chosen:
            raise HarkdError(f"split.folds {sorted(wanted)} match no fold; folds: {[f.name for f in folds]}")
        folds = chosen
    if split.calibration:
        folds = [with_calibration(windows, fold, split.calibration) for fold in folds]
    return folds


def sensor_groups(channels: tuple[ChannelSpec, ...]) -> list[list[int]]:
    """One token per (sensor or position, modality): the unit TSAK's attention relates across the body."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(channels):
        groups.setdefault((c.sensor or c.position, c.modality), []).append(i)
    return list(groups.values())


def check_names(config: ExperimentConfig) -> None:
    """Build every model and method once on toy shapes, so a wrong name or option fails before any training."""
    teacher = build_model(config.teacher.name, 6, 2, [[0, 1, 2], [3, 4, 5]], **config.teacher.params)
    if all(name in teacher.rep_dims for name in REP_NAMES):
        build_model(config.semantic.name, sum(teacher.rep_dims[n] for n in REP_NAMES), 2, **config.semantic.params)
    for spec in config.students:
        student = build_model(spec.name, 3, 2, **spec.params)
        for method in config.methods:
            source = student if method.teacher == "self" else teacher
            build_method(method, student.rep_dims, source.rep_dims, 2, student.map_dims, source.map_dims)


class _OnReps(nn.Module):
    """Lets the engine train stage 2 on precomputed rep tensors (the teacher's reps, concatenated)."""

    def __init__(self, semantic: nn.Module, dims: list[int]):
        super().__init__()
        self.semantic, self.dims = semantic, dims

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.semantic(ModelOutput(logits=x[:, :0], reps=dict(zip(REP_NAMES, x.split(self.dims, 1)))))


@dataclass
class Views:
    """Normalised inputs of one channel view for one fold."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    calibration: torch.Tensor
    normaliser: Normaliser  # fitted on the training windows; kept models carry it


def fold_views(windows: WindowSet, fold: Fold) -> Views:
    norm = fit_normaliser(windows, fold)  # training windows only
    return Views(*(torch.from_numpy(norm(windows.x[idx]))
                   for idx in (fold.train, fold.val, fold.test, fold.calibration)), normaliser=norm)


@dataclass
class RunData:
    """What every (seed, fold) unit of a run reads: the two channel views, the activity targets, the class names."""

    teacher_view: WindowSet
    student_view: WindowSet
    labels: np.ndarray
    class_names: list[str]
    protocol_subjects: tuple[tuple[str, ...] | None, tuple[str, ...] | None]

    @classmethod
    def load(cls, cfg: ExperimentConfig) -> "RunData":
        windows, *protocol_subjects = experiment_windows(cfg)
        labels, class_names = windows.activity_targets()  # Null is never a target
        return cls(windows.select(cfg.teacher_channels), windows.select(cfg.student_channels), labels, class_names,
                   tuple(protocol_subjects))

    def folds(self, cfg: ExperimentConfig, seed: int) -> list[Fold]:
        return make_folds(self.teacher_view, cfg.split, seed, self.protocol_subjects)


@dataclass
class FoldResult:
    """One (seed, fold) unit's rows (without costs: the parent measures those once) and confusion matrices."""

    rows: list[dict]
    confusion: dict[str, np.ndarray]


class FoldRunner:
    """Trains one (seed, fold) unit: teacher, semantic classifier, every student with every method; with
    `models` set, each trained teacher and student is kept there as a bundle (harkd.deploy)."""

    def __init__(self, cfg: ExperimentConfig, data: RunData, work: Path, models: Path | None = None):
        self.cfg, self.data, self.work, self.models = cfg, data, work, models

    def _keep(self, model: nn.Module, spec: ModelSpec, view: WindowSet, views: Views, seed: int, fold: Fold,
              row: dict[str, Any], channel_groups: list[list[int]] | None = None) -> None:
        if self.models is None:
            return
        name = row["role"] if row["role"] == "teacher" else f"{row['role']}-{row['model']}-{row['method']}"
        bundle = ModelBundle.of(model, spec.name, spec.params, view.channels, self.data.class_names, view.x.shape[2],
                                view.rate_hz, views.normaliser, channel_groups, dataset=self.cfg.dataset,
                                fold=fold.name, test_subjects=list(fold.test_subjects), seed=seed, role=row["role"],
                                method=row["method"], macro_f1=row["macro_f1"], accuracy=row["accuracy"],
                                harkd_version=__version__)
        bundle.save(self.models / f"{fold.name}-seed{seed}" / f"{name.replace('/', '_')}.pt")

    def _row(self, fold: Fold, seed: int, role: str, model: str, method: str, channels: str, n_channels: int,
             y: np.ndarray, preds: np.ndarray, f1: float, acc: float, result: FitResult,
             confusions: dict[str, np.ndarray]) -> dict[str, Any]:
        confusions[f"{role}/{model}/{method}"] = confusion(y, preds, len(self.data.class_names))
        return {"dataset": self.cfg.dataset, "fold": fold.name, "test_subjects": list(fold.test_subjects),
                "seed": seed, "role": role, "model": model, "method": method, "channels": channels,
                "n_channels": n_channels, "macro_f1": round(f1, 5), "accuracy": round(acc, 5),
                "epochs": result.epochs, "train_time_s": round(result.train_time_s, 2)}

    def run(self, seed: int, fold: Fold) -> FoldResult:
        cfg, data = self.cfg, self.data
        n_classes = len(data.class_names)
        y = {s: torch.from_numpy(data.labels[getattr(fold, s)]) for s in ("train", "val", "test")}
        y_test = y["test"].numpy()
        xt, xs = fold_views(data.teacher_view, fold), fold_views(data.student_view, fold)
        t_channels, s_channels = cfg.teacher_channels.describe(), cfg.student_channels.describe()
        n_teacher, n_student = len(data.teacher_view.channels), len(data.student_view.channels)
        fold_dir = self.work / f"{fold.name}-seed{seed}"
        confusions: dict[str, np.ndarray] = {}

        torch.manual_seed(seed)
        groups = sensor_groups(data.teacher_view.channels)
        teacher = build_model(cfg.teacher.name, n_teacher, n_classes, groups, **cfg.teacher.params)
        t_fit = fit(teacher, (xt.train, y["train"]), (xt.val, y["val"]), cfg.teacher_train, fold_dir / "teacher",
                    seed=seed)
        preds, f1, acc = evaluate(teacher, xt.test, y_test)
        rows = [self._row(fold, seed, "teacher", cfg.teacher.name, "-", t_channels, n_teacher, y_test, preds, f1, acc,
                          t_fit, confusions)]
        self._keep(teacher, cfg.teacher, data.teacher_view, xt, seed, fold, rows[0], groups)
        # The teacher is frozen from here on: eval mode, no gradients; its outputs are computed once.
        teacher.eval().requires_grad_(False)
        calibrated = len(fold.calibration) > 0
        out = {s: predict(teacher, getattr(xt, s)) for s in ("train", "val", "test", "calibration")[:3 + calibrated]}
        semantic = None
        if all(name in out["train"].reps for name in REP_NAMES):
            row, semantic = self._semantic_stage(seed, fold, out, y, t_channels, n_teacher, fold_dir, confusions)
            rows.append(row)

        def with_semantic(targets: TeacherTargets) -> TeacherTargets:
            """The teacher's outputs with the semantic classifier's logits added (the SC-Logit targets)."""
            if semantic is not None:
                targets.head_logits["semantic"] = predict(semantic, _stacked_reps(targets)).logits
            return targets

        # KD students train on the training windows and, with calibration, on the test subjects' calibration
        # windows too: teacher outputs only (the student-alone's for `teacher: self`), label -1 (the distillers' CE
        # skips it). "none" never sees them. A method with `mixup` adds mixed training windows, labelled the same way
        # (or, with `labels: mixed`, by mixed labels too: all targets become class probabilities).
        kd_windows = [xs.train] + [xs.calibration] * calibrated
        teacher_base = [with_semantic(out[s]) for s in ("train", "calibration")[:1 + calibrated]]
        teacher_on_mixes: dict[tuple[int, float], TeacherTargets] = {}  # once per fold, seed and mixup draw

        def mixup_labels(mixes: Mixes, n_unlabelled: int) -> torch.Tensor:
            """Class probabilities: one-hot for the training windows, zero for `n_unlabelled` calibration windows
            after them, mixed for the mixes."""
            return torch.cat([F.one_hot(y["train"], n_classes).float(), torch.zeros(n_unlabelled, n_classes),
                              mixes.labels(y["train"], n_classes)])

        def kd_set(method: MethodSpec, mixes: Mixes | None, alone: nn.Module | None,
                   alone_base: list[TeacherTargets]) -> tuple[tuple[torch.Tensor, torch.Tensor], TeacherTargets]:
            """A KD method's training windows, their labels and the targets it distils from."""
            windows, targets = list(kd_windows), list(alone_base if method.teacher == "self" else teacher_base)
            labels = torch.cat([y["train"], torch.full((len(fold.calibration),), -1)])
            if mixes is not None:
                windows.append(mixes.apply(xs.train))
                labels = mixup_labels(mixes, len(fold.calibration)) if method.mixup.labels == "mixed" else \
                    torch.cat([labels, torch.full((len(mixes.weight),), -1)])
                if method.teacher == "self":
                    targets.append(predict(alone, windows[-1]))
                else:
                    draw = (method.mixup.copies, method.mixup.alpha)
                    if draw not in teacher_on_mixes:
                        teacher_on_mixes[draw] = with_semantic(predict(teacher, mixes.apply(xt.train)))
                    targets.append(teacher_on_mixes[draw])
            return (torch.cat(windows), labels), concat_targets(*targets)

        for spec in cfg.students:
            alone: nn.Module | None = None  # the student trained alone: the source of `teacher: self` methods
            alone_base: list[TeacherTargets] = []
            for method in cfg.methods:
                torch.manual_seed(seed)
                student = build_model(spec.name, n_student, n_classes, **spec.params)
                source = student if method.teacher == "self" else teacher  # same rep dims as `alone`
                distiller = build_method(method, student.rep_dims, source.rep_dims, n_classes, student.map_dims,
                                         source.map_dims)
                mixes = None if method.mixup is None else Mixes.draw(len(fold.train), method.mixup, seed)
                targets = None
                if distiller is not None:
                    train, kd_targets = kd_set(method, mixes, alone, alone_base)
                    targets = {"train": kd_targets}
                elif mixes is None:
                    train = (xs.train, y["train"])
                else:  # mixup: mixed one-hot labels
                    train = (torch.cat([xs.train, mixes.apply(xs.train)]), mixup_labels(mixes, 0))
                s_fit = fit(student, train, (xs.val, y["val"]), cfg.student_train,
                            fold_dir / f"{spec.label}-{method.name}", seed=seed, distiller=distiller, teacher=targets)
                preds, f1, acc = evaluate(student, xs.test, y_test)
                rows.append(self._row(fold, seed, "student", spec.label, method.name, s_channels, n_student, y_test,
                                      preds, f1, acc, s_fit, confusions))
                self._keep(student, spec, data.student_view, xs, seed, fold, rows[-1])
                if distiller is None:  # frozen like the teacher: fit returns it in eval mode, predict adds no grads
                    alone = student
                    alone_base = [predict(student, x) for x in kd_windows]
        return FoldResult(rows, confusions)

    def _semantic_stage(self, seed, fold, out, y, channels, n_channels, fold_dir, confusions) -> tuple[dict, nn.Module]:
        """TSAK stage 2 on the frozen teacher's reps: its result row, and the trained classifier (on stacked reps)."""
        cfg = self.cfg
        stacked = {s: _stacked_reps(out[s]) for s in ("train", "val", "test")}
        torch.manual_seed(seed)
        dims = [out["train"].reps[name].shape[1] for name in REP_NAMES]
        semantic = build_model(cfg.semantic.name, sum(dims), len(self.data.class_names), **cfg.semantic.params)
        adapter = _OnReps(semantic, dims)
        s_fit = fit(adapter, (stacked["train"], y["train"]), (stacked["val"], y["val"]), cfg.semantic_train,
                    fold_dir / "semantic", seed=seed)
        preds, f1, acc = evaluate(adapter, stacked["test"], y["test"].numpy())
        return self._row(fold, seed, "semantic", cfg.semantic.name, "-", channels, n_channels, y["test"].numpy(),
                         preds, f1, acc, s_fit, confusions), adapter


def _stacked_reps(targets: TeacherTargets) -> torch.Tensor:
    """The teacher's three TSAK reps side by side: the semantic classifier's input."""
    return torch.cat([targets.reps[name] for name in REP_NAMES], 1)


# One FoldRunner per worker process, built once by the pool's initializer (the windows load from the cache).
_WORKER: FoldRunner | None = None


def _init_worker(raw: dict, work: Path, threads: int, models: Path | None) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    cfg = parse_config(raw)
    _WORKER = FoldRunner(cfg, RunData.load(cfg), work, models)


def _run_unit(seed: int, fold_index: int) -> FoldResult:
    assert _WORKER is not None
    return _WORKER.run(seed, _WORKER.data.folds(_WORKER.cfg, seed)[fold_index])


class Runner:
    """A whole run: every (seed, fold) unit, in this process or in `jobs` worker processes, then costs (measured
    once per model, in this process, after training so the latency timings have the machine to themselves),
    results.json and the report."""

    def __init__(self, config: ExperimentConfig, out_dir: Path, command: str, log: Callable[[str], None] = print,
                 jobs: int = 1, keep_models: bool = False):
        if jobs < 1:
            raise HarkdError(f"--jobs must be at least 1, got {jobs}")
        self.config, self.out_dir, self.command, self.log, self.jobs = config, Path(out_dir), command, log, jobs
        self.models = self.out_dir / "models" if keep_models else None

    def run(self) -> dict[str, Any]:
        cfg = self.config
        check_names(cfg)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        clock = time.perf_counter()
        data = RunData.load(cfg)
        self.log(f"{cfg.dataset}: {len(data.labels)} windows, {len(data.class_names)} classes; teacher "
                 f"{len(data.teacher_view.channels)} channels ({cfg.teacher_channels.describe()}), student "
                 f"{len(data.student_view.channels)} channels ({cfg.student_channels.describe()})")
        plan = [(seed, i, fold) for seed in cfg.seeds for i, fold in enumerate(data.folds(cfg, seed))]
        store = UnitStore(self.out_dir, cfg.raw)
        store.open()
        finished = {k: unit for k, (seed, _, fold) in enumerate(plan)
                    if (unit := store.load(seed, fold.name, FoldResult)) is not None}
        if finished:
            self.log(f"resuming: {len(finished)} of {len(plan)} (seed, fold) units already finished in {store.dir}")
        elif (self.out_dir / "models").exists():  # an earlier run's models: they would not match these results
            shutil.rmtree(self.out_dir / "models")
            self.log(f"removed the models of the previous run in {self.out_dir / 'models'}")
        work = Path(tempfile.mkdtemp(prefix="harkd-run-"))
        try:
            units = self._train(plan, data, work, finished, store, clock)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows = [row for unit in units for row in unit.rows]
        confusions: dict[str, np.ndarray] = {}
        for unit in units:
            for key, matrix in unit.confusion.items():
                confusions[key] = confusions.get(key, 0) + matrix
        costs = self._costs(data)
        for row in rows:
            row.update(costs[(row["role"], row["model"])])
        results = {
            "harkd_version": __version__, "started": started, "command": self.command,
            # Over every invocation when the run was resumed (`resumed_units` finished in earlier ones).
            "wall_time_s": round(sum(store.previous_s) + time.perf_counter() - clock, 1), "jobs": self.jobs,
            "resumed_units": len(finished),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}",
            "config": cfg.raw, "class_names": data.class_names, "rows": rows,
            "confusion": {k: v.tolist() for k, v in confusions.items()},
        }
        results["summary"] = summarise(rows)
        results["best_per_family"] = best_per_family(cfg.raw, results["summary"])
        write_results(results, self.out_dir)
        store.clear()
        self.log(format_summary_table(results["summary"]))
        if self.models is not None:
            missing = [f"{fold.name}-seed{seed}" for seed, _, fold in plan
                       if not (self.models / f"{fold.name}-seed{seed}").is_dir()]
            self.log(f"kept {len(list(self.models.glob('*/*.pt')))} trained models in {self.models}"
                     + (f"; none for {', '.join(missing)} (trained by an invocation without --keep-models)"
                        if missing else ""))
        return results

    def _log_unit(self, seed: int, fold: Fold, unit: FoldResult, progress: str) -> None:
        best = max((r for r in unit.rows if r["role"] == "student"), key=lambda r: r["macro_f1"])
        self.log(f"[{progress}] seed {seed} {fold.describe()}: teacher {unit.rows[0]['macro_f1']:.3f}, best student "
                 f"{best['model']}/{best['method']} {best['macro_f1']:.3f}")

    def _train(self, plan: list[tuple[int, int, Fold]], data: RunData, work: Path, finished: dict[int, FoldResult],
               store: UnitStore, clock: float) -> list[FoldResult]:
        """Every unit's result, in plan order whatever order they finish in; units in `finished` are not trained
        again, and each newly trained one goes to `store` as soon as it finishes (`clock`: the run's start)."""
        results = dict(finished)
        todo = [k for k in range(len(plan)) if k not in finished]
        bar = tqdm(total=len(plan), initial=len(finished), desc="folds x seeds", unit="fold", disable=None)

        def done(k: int, unit: FoldResult) -> None:
            results[k] = unit
            seed, _, fold = plan[k]
            store.save(seed, fold.name, unit.rows, unit.confusion)
            elapsed = time.perf_counter() - clock
            store.record_time(elapsed)
            minutes = elapsed / 60
            self._log_unit(seed, fold, unit, f"{len(results)}/{len(plan)}, {minutes:.0f} min")
            bar.update()

        if self.jobs == 1:
            runner = FoldRunner(self.config, data, work, self.models)
            for k in todo:
                done(k, runner.run(plan[k][0], plan[k][2]))
        elif todo:
            # Spawned workers, one torch thread each by default: the models are small, so one thread per process
            # and several processes use the cores better than one process with several threads.
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(self.jobs, mp_context=spawn, initializer=_init_worker,
                                     initargs=(self.config.raw, work, threads, self.models)) as pool:
                futures = {pool.submit(_run_unit, plan[k][0], plan[k][1]): k for k in todo}
                try:
                    for future in as_completed(futures):
                        done(futures[future], future.result())
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
        bar.close()
        return [results[k] for k in range(len(plan))]

    def _costs(self, data: RunData) -> dict[tuple[str, str], dict[str, float]]:
        """Params, FLOPs and batch-1 CPU latency per window for each model of the run (the same in every fold)."""
        cfg, n_classes = self.config, len(data.class_names)
        n_teacher, n_student = len(data.teacher_view.channels), len(data.student_view.channels)
        length = data.teacher_view.x.shape[2]
        torch.manual_seed(0)
        teacher = build_model(cfg.teacher.name, n_teacher, n_classes, sensor_groups(data.teacher_view.channels),
                              **cfg.teacher.params).eval()
        models = {("teacher", cfg.teacher.name): (teacher, n_teacher)}
        if all(name in teacher.rep_dims for name in REP_NAMES):
            semantic = build_model(cfg.semantic.name, sum(teacher.rep_dims[n] for n in REP_NAMES), n_classes,
                                   **cfg.semantic.params)
            models[("semantic", cfg.semantic.name)] = (TwoStageTeacher(teacher, semantic).eval(), n_teacher)
        for spec in cfg.students:
            models[("student", spec.label)] = (build_model(spec.name, n_student, n_classes, **spec.params).eval(),
                                               n_student)
        costs = {}
        for key, (model, channels) in models.items():
            shape = (1, channels, length)
            costs[key] = {"params": count_params(model), "flops": count_flops(model, shape),
                          "latency_ms_cpu": cpu_latency_ms(model, shape, runs=cfg.latency_runs)}
        return costs


def run_experiment(config: ExperimentConfig, out_dir: Path, command: str = "",
                   log: Callable[[str], None] = print, jobs: int = 1, keep_models: bool = False) -> dict[str, Any]:
    return Runner(config, out_dir, command, log, jobs, keep_models).run()


__all__ = ["run_experiment", "make_folds", "experiment_windows", "sensor_groups", "check_names"]
