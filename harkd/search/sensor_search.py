"""`harkd search-sensors`: which sensors a worker should wear. A multi-objective Optuna study over kits of sensor
groups (harkd.search.sensor_space): each trial trains the configured student on the kit's channels with the configured
KD method from the full teacher (trained once per fold), scored by the mean macro-F1 on the validation subjects of the
split's first folds (training subjects only: no test subject guides the search); objectives: that F1 up, the
configured costs down. The Pareto front comes out as a table, a plot and one ready `harkd run` config per member
(harkd.search.sensor_report).

Trials live in an RDB storage (SQLite in OUT by default), so the same command resumes an interrupted search. A trial
is one distinct kit trained (or failed): a kit drawn again is answered from the study, without training, and not
counted; a trial that fails is recorded with its error and the search goes on.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from harkd import __version__
from harkd.data.splits import Fold
from harkd.data.windowing import WindowSet
from harkd.models.bundle import ModelBundle
from harkd.errors import HarkdError
from harkd.execution.processes import Processes, StudyTrials, optimize_in_processes
from harkd.experiment.config import (ExperimentConfig, MethodSpec, OneStudentSearch, PersonaliseSpec, parse_config,
                                    read_config, resolved_data)
from harkd.experiment.fold_unit import teacher_settings
from harkd.experiment.folds import (ExperimentData, FoldLabels, Views, experiment_windows, fold_views,
                                    sensor_groups)
from harkd.experiment.students import Sources, train_student
from harkd.experiment.runner import check_names
from harkd.experiment.teacher import TrainedTeacher, train_teacher
from harkd.experiment.teacher_cache import TeacherStore
from harkd.search.sensor_space import (Kit, SensorSearchSection, SensorSpace, check_sensor_search,
                                       kit_channels, kit_key, run_config)
from harkd.search.studies import config_identity, open_study, storage_urls

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)
DRAWS_PER_TRIAL = 20  # the most kits drawn per counted trial before the search stops (repeats are free but finite)


@dataclass(frozen=True, kw_only=True)
class SensorSearchConfig(OneStudentSearch):
    """The run's shared sections (the student's channels are what the search chooses) and the search's own. `run` is
    its members' `harkd run` config, the student on every channel (a member's: run_config with its kit's channels)."""

    search: SensorSearchSection
    personalise: PersonaliseSpec | None
    run: ExperimentConfig

    @property
    def method(self) -> MethodSpec:
        return self.search.method

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * len(self.search.cost)


def parse_sensor_search(raw: Mapping[str, Any], where: str = "config") -> SensorSearchConfig:
    """The search config; its members' run config is parsed here, so that the front's run configs will parse."""
    schema = check_sensor_search(raw, where)
    run = parse_config(run_config(resolved_data(schema), ()), where)
    return SensorSearchConfig.resolve(schema, raw, search=schema.search, personalise=schema.personalise, run=run)


def sensor_search_yaml(raw: Mapping[str, Any], where: str = "config") -> str:
    """`harkd search-sensors --print-config`: the resolved config as YAML."""
    return yaml.safe_dump(parse_sensor_search(raw, where).resolved, sort_keys=False)


def load_sensor_search(path: Path, overrides: list[str] | None = None) -> SensorSearchConfig:
    return parse_sensor_search(read_config(path, overrides), where=str(path))


def check_method(config: SensorSearchConfig) -> None:
    """The run's own check on the members' run config: every model and method (the personalisation's too) built once
    on toy shapes, so a wrong name or option fails before any training."""
    check_names(config.run)


@dataclass
class SearchFold:
    """One fold the search scores on: its labels, the teacher's inputs and the frozen teacher."""

    fold: Fold
    y: FoldLabels
    teacher_inputs: Views
    teacher: TrainedTeacher


@dataclass
class SearchData:
    """What every trial reads (and what travels to worker processes): the teacher's windows, whose channels the kits
    select, and the search folds with their teachers."""

    view: WindowSet
    class_names: list[str]
    stride: int | None
    folds: list[SearchFold]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def guiding_subjects(self) -> list[str]:
        """The subjects whose windows score the trials (the folds' validation subjects)."""
        return sorted({str(s) for f in self.folds for s in np.unique(self.view.subjects[f.fold.val])})


def load_data(config: SensorSearchConfig) -> ExperimentData:
    """The windows of the teacher's channels (the kits select from them; both views are that one)."""
    windows, protocol_subjects, windowing = experiment_windows(config)
    labels, class_names = windows.activity_targets()
    view = windows.select(config.teacher_channels)
    return ExperimentData(view, view, labels, class_names, protocol_subjects, windowing, config.dataset)


def prepare(config: SensorSearchConfig, data: ExperimentData, work: Path, log: Callable[[str], None],
            teachers: TeacherStore | None = None) -> SearchData:
    """Train the teacher of each search fold (once per invocation, or read from `teachers`; seeded, so a resumed
    search trains the same teachers)."""
    view = data.teacher_view
    prepared = []
    for fold in search_folds(data, config, log):
        y, inputs = FoldLabels.of(data.labels, fold), fold_views(view, fold)
        log(f"teacher {config.teacher.name} on {fold.describe()}")
        teacher = train_teacher(teacher_settings(config), inputs, y, sensor_groups(view.channels), data.n_classes,
                                work / fold.name, config.seed, teachers)
        log(f"teacher {fold.name}: val F1 {teacher.fit.best_val_f1:.3f}" + (" (from the teacher store)"
                                                                           if teacher.from_store else ""))
        prepared.append(SearchFold(fold, y, inputs, teacher))
    return SearchData(view, data.class_names, data.windowing.stride if data.windowing else None, prepared)


def search_folds(data: ExperimentData, config: SensorSearchConfig, log: Callable[[str], None]) -> list[Fold]:
    """The split's first `search.folds` folds whose validation subjects are new: each fold adds subjects to score
    on (leave-one-subject-out folds often draw the same validation subject)."""
    chosen, seen = [], set()
    for fold in data.folds(config.split, config.seed):
        subjects = set(np.unique(data.teacher_view.subjects[fold.val]).tolist())
        if not subjects & seen:
            chosen.append(fold)
            seen |= subjects
        if len(chosen) == config.search.folds:
            return chosen
    log(f"only {len(chosen)} fold(s) have distinct validation subjects; the search scores on those")
    return chosen


def suggest_kit(trial: optuna.Trial, space: SensorSpace) -> Kit:
    """How many positions, which ones, then each one's modalities: a define-by-run space, so that TPE learns the
    size and the positions of good kits separately."""
    size = trial.suggest_categorical("positions", space.sizes())
    worn = trial.suggest_categorical(f"worn_{size}", space.position_sets(size)).split("+")
    return tuple((p, tuple(trial.suggest_categorical(p, ["+".join(m) for m in space.choices[p]]).split("+")))
                 for p in worn)


def kit_params(kit: Kit) -> dict[str, Any]:
    """The trial parameters `suggest_kit` reads as `kit` (to enqueue it)."""
    return {"positions": len(kit), f"worn_{len(kit)}": "+".join(p for p, _ in kit),
            **{p: "+".join(m) for p, m in kit}}


class KitObjective:
    """One trial: a kit, its costs, and the mean validation macro-F1 of the student trained on it in every search
    fold; each fold's student is kept in `keep`/trials/<number>/ when `keep` is set."""

    def __init__(self, config: SensorSearchConfig, space: SensorSpace, data: SearchData, work: Path,
                 keep: Path | None, target: int):
        self.config, self.space, self.data, self.work, self.keep, self.target = config, space, data, work, keep, target

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        if _taken(trial.study) >= self.target:  # processes sharing the study: the last trials are already running
            raise optuna.TrialPruned("trial budget taken")
        kit = suggest_kit(trial, self.space)
        candidate = self.space.find(kit)
        trial.set_user_attr("kit", kit_key(kit))
        if candidate is None:  # a size, positions and modalities that combine over the channel or FLOP budget
            trial.set_user_attr("reason", "over budget")
            raise optuna.TrialPruned("over budget")
        for name in ("channels", "flops", "params"):
            trial.set_user_attr(name, candidate.cost(name))
        twin = _twin(trial, kit_key(kit))
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            raise optuna.TrialPruned(f"trial {twin.number}'s kit")
        try:
            scores = [self._train(trial.number, kit, f) for f in self.data.folds]
        except Exception as exc:  # recorded with the trial; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        trial.set_user_attr("val_f1_per_fold", {f.fold.name: round(s, 5) for f, s in zip(self.data.folds, scores)})
        return (float(np.mean(scores)), *(candidate.cost(m) for m in self.config.search.cost))

    def _train(self, number: int, kit: Kit, fold: SearchFold) -> float:
        cfg = self.config
        view = self.data.view.select(kit_channels(kit))
        inputs = fold_views(view, fold.fold)
        result = train_student(cfg.student, cfg.method, Sources(fold.teacher, fold.teacher_inputs, inputs), fold.y,
                               self.data.n_classes, cfg.student_train, self.work / f"trial{number}-{fold.fold.name}",
                               cfg.seed)
        if self.keep is not None:
            self._keep(result.model, view, inputs, fold.fold, number, result.best_val_f1)
        return result.best_val_f1

    def _keep(self, model: torch.nn.Module, view: WindowSet, inputs: Views, fold: Fold, number: int,
              val_f1: float) -> None:
        cfg = self.config
        bundle = ModelBundle.of(model, cfg.student.name, cfg.student.params, view.channels, self.data.class_names,
                                view.x.shape[2], view.rate_hz, inputs.normaliser, dataset=cfg.dataset,
                                fold=fold.name, test_subjects=list(fold.test_subjects), seed=cfg.seed,
                                role="student", method=cfg.method.name, val_macro_f1=val_f1,
                                harkd_version=__version__)
        bundle.stride = self.data.stride
        bundle.save(self.keep / "trials" / str(number) / f"{fold.name}.pt")


def _twin(trial: optuna.Trial, key: str) -> FrozenTrial | None:
    """A trial of the same kit, finished or running in another process: training is seeded, so it would score the
    same again. Of two running at once, the later one yields."""
    others = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return next((t for t in others if t.number != trial.number and t.user_attrs.get("kit") == key
                 and (t.number < trial.number if t.state == TrialState.RUNNING else is_counted(t))), None)


def is_counted(trial: FrozenTrial) -> bool:
    """A trial that trained its kit, or failed trying (with its error); one stopped by an interrupt is not."""
    return trial.state == TrialState.COMPLETE or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def counted(study: optuna.Study) -> int:
    return sum(map(is_counted, study.get_trials(deepcopy=False, states=FINISHED)))


def _taken(study: optuna.Study) -> int:
    """Counted trials and those other processes are running (this trial is running too)."""
    return counted(study) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) - 1


def fail_interrupted(study: optuna.Study) -> int:
    """Trials left running by an invocation that was killed: failed, without an error, so not counted (one driver
    per study: its worker processes and Ray tasks end with it)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


class StopRule:
    """Stops the study at `target` counted trials, when every kit has been tried, or after the draw cap."""

    def __init__(self, target: int, space_size: int, on_trial: Callable[[FrozenTrial], None] = lambda t: None):
        self.target, self.on_trial = min(target, space_size), on_trial
        self.cap = DRAWS_PER_TRIAL * target

    def done(self, study: optuna.Study) -> bool:
        """Counted and running trials (other processes') fill the budget, or the draws hit the cap."""
        return _taken(study) + 1 >= self.target or len(study.trials) >= self.cap

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.on_trial(trial)
        if self.done(study):
            study.stop()


def sampler(seed: int, study: optuna.Study, worker: int = 0) -> optuna.samplers.BaseSampler:
    """Seeded TPE over the conditional space, reseeded by the trials already stored so that a resumed search does
    not redraw the first run's kits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed + len(study.trials) + 1000 * worker, multivariate=True,
                                          group=True)


def first_kits(space: SensorSpace, target: int) -> list[Kit]:
    """The kits tried before TPE draws any. A space no larger than the trial budget is searched exhaustively;
    otherwise each sensor group alone (one position, one modality) is screened first when those fill at most half
    the budget: the front's cheap end, and what TPE learns the good positions and modalities from."""
    if len(space.candidates) <= target:
        return [c.kit for c in space.candidates]
    groups = [c.kit for c in space.candidates if c.positions == 1 and len(c.kit[0][1]) == 1]
    return groups if len(groups) <= target // 2 else []


def enqueue_untried(study: optuna.Study, kits: list[Kit]) -> None:
    """Queue each of `kits` not yet tried or queued (a resumed search queues only what it misses)."""
    seen = {t.user_attrs.get("kit") for t in study.get_trials(deepcopy=False, states=FINISHED) if is_counted(t)}
    queued = [t.system_attrs.get("fixed_params") for t in
              study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
    for kit in kits:
        if kit_key(kit) not in seen and kit_params(kit) not in queued:
            study.enqueue_trial(kit_params(kit))


def optimize(study: optuna.Study, objective: KitObjective, rule: StopRule, seed: int, worker: int = 0) -> None:
    """Trials in this process until the rule stops the study (shared by every process on the same storage)."""
    if rule.done(study):
        return
    study.sampler = sampler(seed, study, worker)
    study.optimize(objective, callbacks=[rule], catch=(Exception,), gc_after_trial=False)


def _line_to_stderr(trial: FrozenTrial) -> None:
    """A trial's line from a --jobs process (the parent's log is not in reach)."""
    print(describe(trial), file=sys.stderr, flush=True)


def _kit_objective_here(config: SensorSearchConfig, space: SensorSpace, keep: Path | None, target: int,
                        data: SearchData, work: Path) -> KitObjective:
    """A --jobs process's objective: `data` handed over by the parent, `work` the process's folder."""
    return KitObjective(config, space, data, work, keep, target)


def run_trials(config: SensorSearchConfig, space: SensorSpace, data: SearchData, study: optuna.Study,
               storage: str, target: int, work: Path, keep: Path | None, jobs: int, log: Callable[[str], None],
               ray: RayBackend | None = None) -> None:
    """The trials the study misses towards `target`: in this process, in `jobs` processes, or as Ray tasks, all
    sharing the study's storage."""
    if ray is not None:
        _trials_on_ray(config, space, data, study, storage, target, keep, ray, log)
    elif jobs > 1:
        _trials_in_processes(config, space, data, study, storage, target, work, keep, jobs)
    else:
        _trials_here(config, space, data, study, target, work, keep, log)


def _trials_here(config: SensorSearchConfig, space: SensorSpace, data: SearchData, study: optuna.Study, target: int,
                 work: Path, keep: Path | None, log: Callable[[str], None]) -> None:
    with tqdm(total=min(target, len(space.candidates)), initial=counted(study), desc="sensor search", unit="trial",
              disable=None) as bar:
        def report(trial: FrozenTrial) -> None:
            log(describe(trial))
            bar.n = counted(study)
            bar.refresh()

        optimize(study, KitObjective(config, space, data, work, keep, target),
                 StopRule(target, len(space.candidates), report), config.seed)


def _trials_in_processes(config: SensorSearchConfig, space: SensorSpace, data: SearchData, study: optuna.Study,
                         storage: str, target: int, work: Path, keep: Path | None, jobs: int) -> None:
    trials = StudyTrials(partial(_kit_objective_here, config, space, keep, target), storage, study.study_name, work,
                         partial(sampler, config.seed), StopRule(target, len(space.candidates), _line_to_stderr),
                         catch=(Exception,))
    optimize_in_processes(Processes(jobs, threads=1), trials, data)


def _kit_objective(config: SensorSearchConfig, space: SensorSpace, keep: bool, target: int, data: SearchData,
                   work: Path) -> KitObjective:
    """A Ray task's objective (`data` arrives through the object store, `work` is the task's folder): the students it
    keeps go to the driver, which writes them in OUT."""
    from harkd.execution.ray_cluster import KEPT

    return KitObjective(config, space, data, work, work / KEPT if keep else None, target)


def _trials_on_ray(config: SensorSearchConfig, space: SensorSpace, data: SearchData, study: optuna.Study,
                   storage: str, target: int, keep: Path | None, ray: RayBackend,
                   log: Callable[[str], None]) -> None:
    """Rounds of one Ray task per missing trial until the rule stops the study (repeated kits are not counted, so a
    round may leave some missing). Each trial's students come back to this process and are kept under `keep`."""
    from harkd.execution.ray_cluster import optimize_on_ray

    rule = StopRule(target, len(space.candidates))
    while not rule.done(study):
        optimize_on_ray(partial(_kit_objective, config, space, keep is not None, target), data, storage,
                        study.study_name, rule.target - counted(study), ray, sampler=partial(sampler, config.seed),
                        on_trial=lambda trial: log(describe(trial)), catch=(Exception,), keep_into=keep)


def describe(trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        outcome = f"val F1 {trial.values[0]:.3f}"
    else:
        outcome = attrs.get("error") or attrs.get("reason") or (
            f"repeats trial {attrs['duplicate_of']} (not trained, not counted)" if "duplicate_of" in attrs
            else trial.state.name.lower())
    return f"trial {trial.number}: {attrs.get('kit')} ({attrs.get('channels', '?')} channels): {outcome}"


def space_of(config: SensorSearchConfig, view: WindowSet, n_classes: int) -> SensorSpace:
    return SensorSpace.build(view.channels, config.search, config.student, n_classes, view.x.shape[2],
                             where="search")


def search_sensors(config: SensorSearchConfig, out_dir: Path, name: str, trials: int | None = None,
                   storage: str | None = None, jobs: int = 1, log: Callable[[str], None] = print,
                   ray: RayBackend | None = None, teachers: TeacherStore | None = None
                   ) -> tuple[optuna.Study, SensorSpace]:
    """Run the trials the study misses; return the study and the space."""
    check_method(config)
    out_dir = Path(out_dir)
    target = config.search.trials if trials is None else trials
    if target < 1:
        raise HarkdError(f"--trials must be >= 1, got {target}")
    data = load_data(config)
    space = space_of(config, data.teacher_view, data.n_classes)
    for line in data.unit_warnings():
        log(f"warning: {line}")
    out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trial lines are ours; failures are recorded per trial
    storage = storage_urls(out_dir, storage)[0]
    study = open_study(storage, name, config_identity(config.raw), config.directions)
    if stale := fail_interrupted(study):
        log(f"{stale} trial(s) of an interrupted invocation will be drawn again")
    first = first_kits(space, target)
    log(f"{len(space.candidates)} kits within budget over {len(space.positions)} positions; "
        f"{counted(study)} of {min(target, len(space.candidates))} trials done"
        + ("; trying every kit" if len(first) == len(space.candidates) else
           f"; each of the {len(first)} sensor groups alone first" if first else ""))
    if StopRule(target, len(space.candidates)).done(study):
        return study, space
    enqueue_untried(study, first)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per process, as `harkd run` and the worker processes train
    try:
        _train_missing(config, data, space, study, storage, target, out_dir, jobs, log, ray, teachers)
    finally:
        torch.set_num_threads(threads)
    return study, space


def _train_missing(config: SensorSearchConfig, data: ExperimentData, space: SensorSpace, study: optuna.Study,
                   storage: str, target: int, out_dir: Path, jobs: int, log: Callable[[str], None],
                   ray: RayBackend | None, teachers: TeacherStore | None) -> None:
    with tempfile.TemporaryDirectory(prefix="harkd-sensors-", ignore_cleanup_errors=True) as work:
        prepared = prepare(config, data, Path(work), log, teachers)
        log(f"trials score on the validation windows of {', '.join(prepared.guiding_subjects)}")
        study.set_user_attr("guiding_subjects", prepared.guiding_subjects)
        study.set_user_attr("folds", [f.fold.name for f in prepared.folds])
        run_trials(config, space, prepared, study, storage, target, Path(work), out_dir, jobs, log, ray)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front of the distinct kits, cheapest first."""
    best = study.best_trials if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else []
    unique = {t.user_attrs["kit"]: t for t in sorted(best, key=lambda t: t.number, reverse=True)}
    return sorted(unique.values(), key=lambda t: (*t.values[1:], -t.values[0]))


def best_by_positions(study: optuna.Study) -> list[FrozenTrial]:
    """The best kit at each number of positions worn (what a factory buys is first a number of devices), whether or
    not a kit with fewer positions scores higher."""
    best: dict[int, FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        size = int(trial.params["positions"])
        if size not in best or trial.values[0] > best[size].values[0]:
            best[size] = trial
    return [best[size] for size in sorted(best)]


__all__ = ["KitObjective", "SearchData", "SensorSearchConfig", "StopRule", "best_by_positions", "front",
           "load_sensor_search", "parse_sensor_search", "search_sensors", "sensor_search_yaml", "suggest_kit"]
