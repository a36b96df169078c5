"""SMLDist's search over heterogeneous classifier heads (ours: the paper's search is unpublished).

An Optuna study (seeded TPE) over the head type, the head's size options and optionally the width of one student
model, scored by macro-F1 on the validation windows of the first fold (training subjects only; test subjects are
never used). A trial whose whole student, on one window, is over the parameter or FLOP budget is pruned before any
training, with the reason in its user attributes. Trials live in an RDB storage (SQLite in OUT by default), so a
rerun resumes: `trials` counts finished trials (complete or pruned) in total.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Mapping

import optuna
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import TrialState
from pydantic import AfterValidator
from tqdm import tqdm

from harkd import __version__
from harkd.cost import count_flops, count_params
from harkd.distill.compose import build_method
from harkd.errors import HarkdError
from harkd.execution.processes import Processes, StudyTrials, optimize_in_processes
from harkd.experiment.config import (DataSections, MethodEntry, MethodSpec, OneStudentSearch, Section,
                                    StudentsSection, TeacherSection, read_config)
from harkd.experiment.fold_unit import teacher_settings
from harkd.experiment.folds import ExperimentData, FoldLabels, fold_views, sensor_groups
from harkd.experiment.teacher import train_teacher
from harkd.experiment.teacher_cache import TeacherStore
from harkd.files import atomic_output
from harkd.models.base import build_model, model_defaults
from harkd.models.heads import HEAD_OPTIONS, HEADS
from harkd.schema import PositiveFloats, PositiveInt, PositiveInts, Str, config_dataclass, resolved_yaml, validate
from harkd.search.studies import config_identity, open_study, storage_urls
from harkd.train.engine import TeacherTargets, fit

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend

# Choices per size option unless `search.sizes` replaces them: small enough for a few-thousand-parameter student.
class Sizes(Section):
    head_hidden: PositiveInts = (8, 16, 32, 64)
    memory_dim: PositiveInts = (4, 8, 16, 32)
    patterns_per_class: PositiveInts = (1, 2, 4)
    attention_dim: PositiveInts = (4, 8, 16, 32)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@config_dataclass("search.budget")
class Budget:
    """Limits on the whole student's parameters and FLOPs per window; None is no limit."""

    params: PositiveInt | None = None
    flops: PositiveInt | None = None

    def exceeded(self, params: int, flops: int) -> str:
        """Why a model is over budget, or "" when it fits."""
        over = [f"{name} {value:,} > {limit:,}" for name, value, limit in
                (("params", params, self.params), ("flops", flops, self.flops)) if limit is not None and value > limit]
        return "over budget: " + ", ".join(over) if over else ""


def _known_heads(heads: tuple[str, ...]) -> tuple[str, ...]:
    if not heads or len(set(heads)) != len(heads) or set(heads) - set(HEADS):
        raise ValueError(f"expected a list of distinct heads from {', '.join(HEADS)}; got {list(heads)!r}")
    return tuple(heads)


class SearchSection(Section):
    budget: Budget = Budget()
    heads: Annotated[tuple[Str, ...], AfterValidator(_known_heads)] = HEADS
    widths: PositiveFloats | None = None  # None: the student's own width only
    sizes: Sizes = Sizes()
    trials: PositiveInt = 20
    method: MethodEntry = MethodSpec("none", ())


class SearchSchema(DataSections):
    """A run config's data, teacher and student sections (one student model, with a `head` option) plus `search`."""

    teacher: TeacherSection = TeacherSection()
    semantic: ClassVar[None] = None  # not a key: a KD teacher's semantic classifier is not trained in the search
    students: StudentsSection
    search: SearchSection


@dataclass(frozen=True, kw_only=True)
class SearchConfig(OneStudentSearch):
    """The run's shared sections (its teacher trained only when `method` distils) and the search's own."""

    method: MethodSpec
    budget: Budget
    heads: tuple[str, ...]
    widths: tuple[float, ...]
    sizes: dict[str, tuple[int, ...]]
    trials: int


def _check_search(schema: SearchSchema, where: str) -> None:
    """The head search's own rules, beyond the shared sections' schema."""
    models = schema.students.models
    if len(models) != 1:
        raise HarkdError(f"{where}: students.models: a head search takes exactly one student model, got "
                         f"{[m.label for m in models]}")
    if "head" not in model_defaults(models[0].name):
        raise HarkdError(f"{where}: students.models[0]: model {models[0].name} has no head option to search; "
                         f"use mobilenet_v3_1d")
    method = schema.search.method
    if method.teacher != "teacher":  # each trial would need its own student-alone twin: not worth a search's time
        raise HarkdError(f"{where}: search.method: teacher {method.teacher!r} is for `harkd run`; the head search "
                         f"distils from its config's teacher section")
    if method.mixup is not None:  # trials compare heads on one fixed training set
        raise HarkdError(f"{where}: search.method: mixup is for `harkd run`; the head search trains on the fold's "
                         f"training windows")
    if method.terms and schema.teacher.model is None:
        raise HarkdError(f"{where}: search.method {method.name!r} distils from a teacher; add a teacher section "
                         f"{{channels, model, params, train}}")
    if len(schema.seeds) != 1:
        raise HarkdError(f"{where}: seeds: a head search uses one seed (e.g. [0]), got {schema.seeds}")


def check_search(raw: Mapping[str, Any], where: str = "config") -> SearchSchema:
    """The search config with every key and value checked and every default filled in."""
    schema = validate(SearchSchema, raw, where)
    _check_search(schema, where)
    return schema


def parse_search_config(raw: Mapping[str, Any], where: str = "config") -> SearchConfig:
    schema = check_search(raw, where)
    student, search = schema.students.models[0], schema.search
    return SearchConfig.resolve(
        schema, raw, method=search.method, budget=search.budget, heads=search.heads,
        widths=search.widths or (student.params.get("width", model_defaults(student.name)["width"]),),
        sizes=dict(search.sizes), trials=search.trials)


def search_yaml(raw: Mapping[str, Any], where: str = "config") -> str:
    """`harkd search-head --print-config`: the resolved config as YAML."""
    return resolved_yaml(SearchSchema, check_search(raw, where))


def load_search_config(path: Path, overrides: list[str] | None = None) -> SearchConfig:
    return parse_search_config(read_config(path, overrides), where=str(path))


def suggest_options(trial: optuna.Trial, config: SearchConfig) -> dict[str, Any]:
    """The student options of one trial: a head, its size options and (when several are listed) a width."""
    head = trial.suggest_categorical("head", list(config.heads))
    width = trial.suggest_categorical("width", list(config.widths)) if len(config.widths) > 1 else config.widths[0]
    return {"head": head, "width": width,
            **{name: trial.suggest_categorical(name, list(config.sizes[name])) for name in HEAD_OPTIONS[head]}}


@dataclass
class _Data:
    """What every trial trains on: the first fold's student inputs, and the frozen teacher's outputs for KD."""

    fold: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_classes: int
    teacher_rep_dims: dict[str, int]
    teacher_map_dims: dict[str, int]
    targets: dict[str, TeacherTargets] | None


def _prepare(config: SearchConfig, work: Path, log: Callable[[str], None], teachers: TeacherStore | None) -> _Data:
    data = ExperimentData.load(config, config.teacher_channels, config.student_channels)
    fold = data.folds(config.split, config.seed)[0]
    y = FoldLabels.of(data.labels, fold)
    student = fold_views(data.student_view, fold)
    log(f"{config.dataset} {fold.describe()}; searching on the {len(fold.val)} validation windows of training "
        f"subjects, {data.n_classes} classes")
    for line in data.unit_warnings():
        log(f"warning: {line}")
    prepared = _Data(fold.name, student.train, y.train, student.val, y.val, data.n_classes, {}, {}, None)
    if not config.method.terms:
        return prepared
    # KD during the search: the teacher is trained once per run and its outputs computed once for every trial.
    teacher = train_teacher(teacher_settings(config), fold_views(data.teacher_view, fold), y,
                            sensor_groups(data.teacher_view.channels), data.n_classes, work, config.seed, teachers)
    log(f"teacher {config.teacher.name}: val F1 {teacher.fit.best_val_f1:.3f}"
        + (" (from the teacher store)" if teacher.from_store else ""))
    prepared.teacher_rep_dims, prepared.teacher_map_dims = teacher.model.rep_dims, teacher.model.map_dims
    prepared.targets = {"train": teacher.outputs["train"]}
    return prepared


class _Objective:
    """One trial: build the student, cost it, prune it when over budget, else train it and return val macro-F1."""

    def __init__(self, config: SearchConfig, data: _Data, work: Path):
        self.config, self.data, self.work = config, data, work

    def __call__(self, trial: optuna.Trial) -> float:
        cfg, data = self.config, self.data
        options = suggest_options(trial, cfg)
        torch.manual_seed(cfg.seed)
        student = build_model(cfg.student.name, data.x_train.shape[1], data.n_classes, **{**cfg.student.params,
                                                                                          **options})
        params = count_params(student)
        flops = count_flops(student, (1, *data.x_train.shape[1:]))
        for key, value in {"head": options["head"], "options": options, "params": params, "flops": flops}.items():
            trial.set_user_attr(key, value)
        reason = cfg.budget.exceeded(params, flops)
        if reason:
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        # Training is seeded and deterministic: a point already trained would score the same again.
        twin = next((t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.params == trial.params), None)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            return twin.value
        distiller = build_method(cfg.method, student.rep_dims, data.teacher_rep_dims, data.n_classes,
                                 student.map_dims, data.teacher_map_dims)
        result = fit(student, (data.x_train, data.y_train), (data.x_val, data.y_val), cfg.student_train,
                     self.work / f"trial{trial.number}", seed=cfg.seed, distiller=distiller,
                     teacher=data.targets if distiller is not None else None)
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("train_time_s", round(result.train_time_s, 2))
        return result.best_val_f1


def _sampler(seed: int, study: optuna.Study, index: int) -> optuna.samplers.BaseSampler:
    """A Ray task's sampler: seeded TPE, reseeded by the trials already stored and the task's index."""
    return optuna.samplers.TPESampler(seed=seed + len(study.trials) + 1000 * index)


def _open_study(config: SearchConfig, storage: str, name: str) -> optuna.Study:
    return open_study(storage, name, config_identity(config.raw), ["maximize"])


def _describe(trial: optuna.trial.FrozenTrial) -> str:
    attrs = trial.user_attrs
    options = " ".join(f"{k}={v}" for k, v in attrs.get("options", {}).items() if k != "head")
    cost = f"{attrs.get('params', 0):,} params, {attrs.get('flops', 0) / 1e6:.3f} MFLOPs"
    outcome = (f"val F1 {trial.value:.3f}" if trial.state == TrialState.COMPLETE
               else attrs.get("reason", trial.state.name.lower()))
    if "duplicate_of" in attrs:
        outcome += f" (trial {attrs['duplicate_of']}'s point, not retrained)"
    return f"trial {trial.number}: {attrs.get('head')} {options}: {cost}, {outcome}"


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {"number": trial.number, "state": trial.state.name, "head": attrs.get("head"),
            "options": attrs.get("options"), "params": attrs.get("params"), "flops": attrs.get("flops"),
            "val_f1": round(trial.value, 5) if trial.state == TrialState.COMPLETE else None,
            **{k: attrs[k] for k in ("reason", "duplicate_of", "epochs", "train_time_s") if k in attrs}}


def _plot(rows: list[dict], best: dict | None, budget: Budget, title: str, path: Path) -> None:
    """Val F1 against FLOPs per head; over-budget heads (never trained) as crosses on the x axis."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for head in dict.fromkeys(r["head"] for r in rows if r["val_f1"] is not None):
        points = [r for r in rows if r["head"] == head and r["val_f1"] is not None]
        ax.scatter([r["flops"] / 1e6 for r in points], [r["val_f1"] for r in points], label=head, alpha=0.8)
    over = [r for r in rows if r["state"] == "PRUNED"]
    if over:
        ax.scatter([r["flops"] / 1e6 for r in over], [0.0] * len(over), marker="x", color="grey",
                   label="over budget (not trained)")
    if budget.flops is not None:
        ax.axvline(budget.flops / 1e6, color="red", linestyle="--", label=f"FLOP budget {budget.flops:,}")
    if best is not None:
        ax.scatter([best["flops"] / 1e6], [best["val_f1"]], s=200, facecolors="none", edgecolors="black",
                   label=f"best: {best['head']}")
    ax.set_xlabel("MFLOPs per window")
    ax.set_ylabel("validation macro-F1")
    ax.set_title(title + (f" (params <= {budget.params:,})" if budget.params is not None else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


@dataclass(frozen=True)
class _TrialBudget:
    """A --jobs search's stop rule: the study's finished trials and those other processes run fill `target`; each
    process writes its trials' lines (the parent's log is not in reach)."""

    target: int

    def done(self, study: optuna.Study) -> bool:
        return len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))) >= self.target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(_describe(trial), file=sys.stderr, flush=True)
        if self.done(study):
            study.stop()


def _run_trials(config: SearchConfig, study: optuna.Study, storage: str, trials: int, log: Callable[[str], None],
                runs_on: Processes | RayBackend, teachers: TeacherStore | None) -> None:
    """The trials the study misses towards `trials`, here, in processes or as Ray tasks, after the teacher stage."""
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    # Reseeded by the trials already stored, so a resumed run does not redraw the first run's points.
    study.sampler = _sampler(config.seed, study, 0)
    with tempfile.TemporaryDirectory(prefix="harkd-search-") as work:
        data = _prepare(config, Path(work), log, teachers)
        study.set_user_attr("fold", data.fold)
        if isinstance(runs_on, Processes) and runs_on.jobs > 1:
            optimize_in_processes(runs_on, StudyTrials(partial(_Objective, config), storage, study.study_name,
                                                       Path(work), partial(_sampler, config.seed),
                                                       _TrialBudget(trials)), data)
            return
        with tqdm(total=trials, initial=done, desc="head search", unit="trial", disable=None) as bar:
            def report(_, trial):
                log(_describe(trial))
                bar.update()

            if isinstance(runs_on, Processes):
                study.optimize(_Objective(config, data, Path(work)), n_trials=trials - done, callbacks=[report])
            else:
                from harkd.execution.ray_cluster import optimize_on_ray

                optimize_on_ray(partial(_Objective, config), data, storage, study.study_name, trials - done, runs_on,
                                sampler=partial(_sampler, config.seed), on_trial=partial(report, study))


def run_head_search(config: SearchConfig, out_dir: Path, study_name: str, trials: int | None = None,
                    storage: str | None = None, command: str = "",
                    log: Callable[[str], None] = print, ray: RayBackend | None = None,
                    teachers: TeacherStore | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run the trials the study misses towards `trials` finished ones, here, in `jobs` processes or with `ray` as tasks
    on a Ray cluster, all sharing the storage; write OUT/search.json and search.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage, recorded_storage = storage_urls(out_dir, storage)
    trials = config.trials if trials is None else trials
    if trials < 1:
        raise HarkdError(f"--trials must be >= 1, got {trials}")
    # A failing trial's error is re-raised (one line at the CLI); optuna's own warning would add its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _open_study(config, storage, study_name)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done < trials:
        log(f"study {study_name!r}: {done} of {trials} trials finished; running {trials - done}")
        _run_trials(config, study, storage, trials, log, ray or Processes(jobs, threads=1), teachers)
    rows = [_trial_row(t) for t in study.get_trials(deepcopy=False)]
    complete = [r for r in rows if r["val_f1"] is not None]
    best = min(complete, key=lambda r: (-r["val_f1"], r["flops"], r["params"], r["number"]), default=None)
    results = {"harkd_version": __version__, "command": command, "study": study_name, "storage": recorded_storage,
               "dataset": config.dataset, "fold": study.user_attrs.get("fold"), "method": config.method.name,
               "budget": {"params": config.budget.params, "flops": config.budget.flops},
               "finished": sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows), "trials": rows,
               "best": None if best is None else {k: best[k] for k in ("number", "head", "options", "params",
                                                                       "flops", "val_f1")},
               "config": config.raw}
    with atomic_output(out_dir / "search.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    _plot(rows, best, config.budget, f"{study_name}: head search", out_dir / "search.png")
    return results
