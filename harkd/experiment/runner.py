"""`harkd run`: for every seed and fold, train the teacher, its semantic classifier (TSAK stage 2) and each student
with each KD method; write results.json (one row per fold, seed, role, model, method) and report.md beside it.

The teacher's outputs on the training windows are computed once per fold and seed and handed to every student run,
so a student's epoch costs what the student costs.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harkd import __version__
from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.data.catalog import load_recordings, load_windows
from harkd.data.protocols import PROTOCOLS
from harkd.data.recording import ChannelSpec
from harkd.data.splits import Fold, fit_normaliser, fixed_split, group_folds, leave_one_subject_out
from harkd.data.windowing import WindowSet, make_windows
from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.experiment.config import ExperimentConfig, SplitSpec
from harkd.experiment.report import format_summary_table, write_results
from harkd.experiment.summary import summarise
from harkd.metrics import confusion
from harkd.models.base import ModelOutput, build_model
from harkd.models.tsak import REP_NAMES, TwoStageTeacher
from harkd.train.engine import FitResult, TeacherTargets, evaluate, fit, predict, quiet_lightning


def experiment_windows(config: ExperimentConfig) -> tuple[WindowSet, tuple[str, ...] | None, tuple[str, ...] | None]:
    """The windows, and for a protocol split its train/test subject lists."""
    if config.split.kind == "protocol":
        if config.split.protocol not in PROTOCOLS:
            raise HarkdError(f"split.protocol: unknown protocol {config.split.protocol!r}; "
                             f"known: {', '.join(PROTOCOLS)}")
        dataset, build, _ = PROTOCOLS[config.split.protocol]
        if dataset != config.dataset:
            raise HarkdError(f"split.protocol {config.split.protocol!r} applies to dataset {dataset!r}, "
                             f"not {config.dataset!r}")
        protocol = build(load_recordings(config.dataset, config.dataset_options))
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
            build_method(method, student.rep_dims, teacher.rep_dims, 2, student.map_dims, teacher.map_dims)


class _OnReps(nn.Module):
    """Lets the engine train stage 2 on precomputed rep tensors (the teacher's reps, concatenated)."""

    def __init__(self, semantic: nn.Module, dims: list[int]):
        super().__init__()
        self.semantic, self.dims = semantic, dims

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.semantic(ModelOutput(logits=x[:, :0], reps=dict(zip(REP_NAMES, x.split(self.dims, 1)))))


@dataclass
class _Split:
    """Normalised inputs of one channel view for one fold."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def _views(windows: WindowSet, fold: Fold) -> _Split:
    norm = fit_normaliser(windows, fold)  # training windows only
    return _Split(*(torch.from_numpy(norm(windows.x[idx])) for idx in (fold.train, fold.val, fold.test)))


class Runner:
    def __init__(self, config: ExperimentConfig, out_dir: Path, command: str, log: Callable[[str], None] = print):
        self.config, self.out_dir, self.command, self.log = config, Path(out_dir), command, log
        self.costs: dict[str, dict[str, float]] = {}
        self.confusion: dict[str, np.ndarray] = {}

    def _cost(self, key: str, model: nn.Module, in_shape: tuple[int, int]) -> dict[str, float]:
        """Params, FLOPs and batch-1 CPU latency per window; the architecture is the same in every fold."""
        if key not in self.costs:
            shape = (1, *in_shape)
            self.costs[key] = {"params": count_params(model), "flops": count_flops(model, shape),
                               "latency_ms_cpu": cpu_latency_ms(model, shape, runs=self.config.latency_runs)}
        return self.costs[key]

    def _row(self, fold: Fold, seed: int, role: str, model: str, method: str, channels: str, n_channels: int,
             y: np.ndarray, preds: np.ndarray, f1: float, acc: float, cost: dict, result: FitResult,
             n_classes: int) -> dict[str, Any]:
        key = f"{role}/{model}/{method}"
        self.confusion[key] = self.confusion.get(key, 0) + confusion(y, preds, n_classes)
        return {"dataset": self.config.dataset, "fold": fold.name, "test_subjects": list(fold.test_subjects),
                "seed": seed, "role": role, "model": model, "method": method, "channels": channels,
                "n_channels": n_channels, "macro_f1": round(f1, 5), "accuracy": round(acc, 5), **cost,
                "epochs": result.epochs, "train_time_s": round(result.train_time_s, 2)}

    def run(self) -> dict[str, Any]:
        cfg = self.config
        check_names(cfg)
        quiet_lightning()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        clock = time.perf_counter()
        windows, *protocol_subjects = experiment_windows(cfg)
        # Null is never a target: classes are renumbered to the activities present in the data.
        keep = [c for c in range(len(windows.class_names)) if c != windows.null_class]
        remap = np.full(len(windows.class_names), -1)
        remap[keep] = np.arange(len(keep))
        class_names = [windows.class_names[c] for c in keep]
        labels = remap[windows.y]
        teacher_view, student_view = windows.select(cfg.teacher_channels), windows.select(cfg.student_channels)
        self.log(f"{cfg.dataset}: {len(windows)} windows, {len(class_names)} classes; teacher "
                 f"{len(teacher_view.channels)} channels ({cfg.teacher_channels.describe()}), student "
                 f"{len(student_view.channels)} channels ({cfg.student_channels.describe()})")
        rows: list[dict] = []
        work = Path(tempfile.mkdtemp(prefix="harkd-run-"))
        try:
            plan = [(seed, fold) for seed in cfg.seeds
                    for fold in make_folds(windows, cfg.split, seed, tuple(protocol_subjects))]
            for seed, fold in tqdm(plan, desc="folds x seeds", unit="fold", disable=None):
                fold_rows = self._run_fold(seed, fold, teacher_view, student_view, labels, len(class_names), work)
                rows += fold_rows
                best = max((r for r in fold_rows if r["role"] == "student"), key=lambda r: r["macro_f1"])
                self.log(f"seed {seed} {fold.describe()}: teacher {fold_rows[0]['macro_f1']:.3f}, best student "
                         f"{best['model']}/{best['method']} {best['macro_f1']:.3f}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results = {
            "harkd_version": __version__, "started": started, "command": self.command,
            "wall_time_s": round(time.perf_counter() - clock, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                       f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}",
            "config": cfg.raw, "class_names": class_names, "rows": rows,
            "confusion": {k: v.tolist() for k, v in self.confusion.items()},
        }
        results["summary"] = summarise(rows)
        write_results(results, self.out_dir)
        self.log(format_summary_table(results["summary"]))
        return results

    def _run_fold(self, seed: int, fold: Fold, teacher_view: WindowSet, student_view: WindowSet,
                  labels: np.ndarray, n_classes: int, work: Path) -> list[dict]:
        cfg = self.config
        y = {s: torch.from_numpy(labels[getattr(fold, s)]) for s in ("train", "val", "test")}
        y_test = y["test"].numpy()
        xt, xs = _views(teacher_view, fold), _views(student_view, fold)
        t_channels, s_channels = cfg.teacher_channels.describe(), cfg.student_channels.describe()
        window_len = teacher_view.x.shape[2]
        fold_dir = work / f"{fold.name}-seed{seed}"

        torch.manual_seed(seed)
        teacher = build_model(cfg.teacher.name, len(teacher_view.channels), n_classes,
                              sensor_groups(teacher_view.channels), **cfg.teacher.params)
        t_fit = fit(teacher, (xt.train, y["train"]), (xt.val, y["val"]), cfg.teacher_train, fold_dir / "teacher",
                    seed=seed)
        preds, f1, acc = evaluate(teacher, xt.test, y_test)
        t_cost = self._cost(f"teacher/{cfg.teacher.name}", teacher, (len(teacher_view.channels), window_len))
        rows = [self._row(fold, seed, "teacher", cfg.teacher.name, "-", t_channels, len(teacher_view.channels),
                          y_test, preds, f1, acc, t_cost, t_fit, n_classes)]
        # The teacher is frozen from here on: eval mode, no gradients; its outputs are computed once.
        teacher.eval().requires_grad_(False)
        out = {s: predict(teacher, getattr(xt, s)) for s in ("train", "val", "test")}
        head_logits = dict(out["train"].head_logits)
        if all(name in out["train"].reps for name in REP_NAMES):
            rows.append(self._semantic_stage(seed, fold, teacher, out, y, n_classes, t_channels,
                                             len(teacher_view.channels), window_len, fold_dir, head_logits))
        targets = {"train": TeacherTargets(out["train"].logits, out["train"].reps, head_logits, out["train"].maps)}

        for spec in cfg.students:
            for method in cfg.methods:
                torch.manual_seed(seed)
                student = build_model(spec.name, len(student_view.channels), n_classes, **spec.params)
                distiller = build_method(method, student.rep_dims, teacher.rep_dims, n_classes, student.map_dims,
                                         teacher.map_dims)
                s_fit = fit(student, (xs.train, y["train"]), (xs.val, y["val"]), cfg.student_train,
                            fold_dir / f"{spec.label}-{method.name}", seed=seed, distiller=distiller,
                            teacher=targets if distiller is not None else None)
                preds, f1, acc = evaluate(student, xs.test, y_test)
                cost = self._cost(f"student/{spec.label}", student, (len(student_view.channels), window_len))
                rows.append(self._row(fold, seed, "student", spec.label, method.name, s_channels,
                                      len(student_view.channels), y_test, preds, f1, acc, cost, s_fit, n_classes))
        return rows

    def _semantic_stage(self, seed, fold, teacher, out, y, n_classes, channels, n_channels, window_len, fold_dir,
                        head_logits) -> dict:
        """TSAK stage 2 on the frozen teacher's reps; its logits on the training windows become SC-Logit targets."""
        cfg = self.config
        dims = [teacher.rep_dims[name] for name in REP_NAMES]
        stacked = {s: torch.cat([out[s].reps[name] for name in REP_NAMES], 1) for s in out}
        torch.manual_seed(seed)
        semantic = build_model(cfg.semantic.name, sum(dims), n_classes, **cfg.semantic.params)
        adapter = _OnReps(semantic, dims)
        s_fit = fit(adapter, (stacked["train"], y["train"]), (stacked["val"], y["val"]), cfg.semantic_train,
                    fold_dir / "semantic", seed=seed)
        preds, f1, acc = evaluate(adapter, stacked["test"], y["test"].numpy())
        head_logits["semantic"] = predict(adapter, stacked["train"]).logits
        cost = self._cost(f"semantic/{cfg.semantic.name}", TwoStageTeacher(teacher, semantic).eval(),
                          (n_channels, window_len))
        return self._row(fold, seed, "semantic", cfg.semantic.name, "-", channels, n_channels, y["test"].numpy(),
                         preds, f1, acc, cost, s_fit, n_classes)


def run_experiment(config: ExperimentConfig, out_dir: Path, command: str = "",
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    return Runner(config, out_dir, command, log).run()


__all__ = ["run_experiment", "make_folds", "experiment_windows", "sensor_groups", "check_names"]
