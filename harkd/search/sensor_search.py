"""`harkd search-sensors`: which sensors a worker should wear. A multi-objective Optuna study over kits of sensor
groups (harkd.search.sensor_space): each trial trains the configured student on the kit's channels with the configured
KD method from the full teacher (trained once per fold), scored on workers held out one per fold, a kit stopping
early when a rival clearly beats it (harkd.search.search_folds, harkd.search.kit_scores); objectives: that score up,
the configured costs down. The Pareto front comes out as a table, a plot and one ready `harkd run` config per member
(harkd.search.sensor_report).

Trials live in an RDB storage (SQLite in OUT by default), so the same command resumes an interrupted search. A trial
is one distinct kit trained (or failed): a kit drawn again is answered from the study, without training, and not
counted; a trial that fails is recorded with its error and the search goes on.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

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
from harkd.experiment.folds import ExperimentData, Views, fold_views
from harkd.experiment.students import Sources, train_student
from harkd.experiment.runner import check_names
from harkd.experiment.teacher_cache import TeacherStore
from harkd.search.kit_trials import (PARAMETRISATIONS, StopRule, counted, enqueue_untried, fail_interrupted,
                                     first_kits, sampler, taken, twin)
from harkd.search.kit_scores import KitScores, adjusted_means, score_in_rungs
from harkd.search.search_folds import (FoldTeachers, SearchData, SearchFold, load_data, scoring_folds,
                                       search_data)
from harkd.search.sensor_space import (VALIDATION_FOLDS, Candidate, Kit, SensorSearchSection, SensorSpace,
                                       check_sensor_search, kit_channels, kit_key, run_config)
from harkd.search.studies import config_identity, open_study, storage_urls
from harkd.train.engine import evaluate

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend

FEW_KITS = 0.1  # a parametrisation whose draws are kits this rarely is warned about


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

    @property
    def scored_folds(self) -> int | None:
        """The most folds a kit is scored on (None: every one)."""
        if self.search.scoring.protocol == "validation":
            return self.search.folds or VALIDATION_FOLDS
        return self.search.scoring.workers


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


class KitObjective:
    """One trial: a kit, its costs, and its score (harkd.search.kit_scores): the student trained on the kit with the
    search's KD in each scoring fold in turn until the kit stops at a rung or every fold has scored it; each fold's
    student is kept in `keep`/trials/<number>/ when `keep` is set."""

    def __init__(self, config: SensorSearchConfig, space: SensorSpace, data: SearchData, work: Path,
                 keep: Path | None, target: int):
        self.config, self.space, self.data, self.work, self.keep, self.target = config, space, data, work, keep, target

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        if taken(trial.study) >= self.target:  # processes sharing the study: the last trials are already running
            raise optuna.TrialPruned("trial budget taken")
        kit = PARAMETRISATIONS[self.config.search.parametrisation].suggest(trial, self.space)
        candidate = self.space.find(kit)
        trial.set_user_attr("kit", kit_key(kit))
        if candidate is None:  # a size, positions and modalities that combine over the channel or FLOP budget
            trial.set_user_attr("reason", "over budget")
            raise optuna.TrialPruned("over budget")
        for name in ("channels", "flops", "params"):
            trial.set_user_attr(name, candidate.cost(name))
        same = twin(trial, kit_key(kit))
        if same is not None:
            trial.set_user_attr("duplicate_of", same.number)
            raise optuna.TrialPruned(f"trial {same.number}'s kit")
        try:
            scores = self._score(trial, kit, KitScores(kit_key(kit), self._costs(candidate)))
        except Exception as exc:  # recorded with the trial; the search goes on
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        return (self._value(trial.study, scores), *(candidate.cost(m) for m in self.config.search.cost))

    def _costs(self, candidate: Candidate) -> tuple[int, ...]:
        return (candidate.positions, *(candidate.cost(m) for m in self.config.search.cost if m != "positions"))

    def _score(self, trial: optuna.Trial, kit: Kit, scores: KitScores) -> KitScores:
        """The kit's scores fold by fold, rung by rung, until a rival beats it clearly or every fold is scored."""
        scoring, folds = self.config.search.scoring, {f.name: f for f in self.data.folds}
        scores, rival = score_in_rungs(
            scores, list(folds), lambda name: self.train_on(trial.number, kit, folds[name]),
            lambda: scored_kits(trial.study, self.config.search.cost), scoring.rungs, scoring.confidence,
            on_score=lambda s: trial.set_user_attr("score_per_fold", {k: round(v, 5) for k, v in s.by_fold.items()}))
        if rival is not None:
            trial.set_user_attr("stopped_by", rival.kit)
        return scores

    def _value(self, study: optuna.Study, scores: KitScores) -> float:
        """The mean over every fold; for a kit stopped early, its subject-adjusted mean (the folds it missed are
        estimated from the kits scored on them)."""
        if len(scores.by_fold) == len(self.data.folds):
            return scores.mean
        others = [k for k in scored_kits(study, self.config.search.cost) if k.kit != scores.kit]
        return adjusted_means([*others, scores])[scores.kit]

    def train_on(self, number: int, kit: Kit, fold: SearchFold) -> float:
        """The kit's score on `fold`: its student trained there with the search's KD, scored on the fold's held-out
        worker (or, in the validation protocol, its validation windows); kept as trial `number`'s when kept."""
        cfg = self.config
        view = self.data.view.select(kit_channels(kit))
        inputs = fold_views(view, fold.fold)
        result = train_student(cfg.student, cfg.method, Sources(fold.teacher, fold.teacher_inputs, inputs), fold.y,
                               self.data.n_classes, cfg.student_train, self.work / f"trial{number}-{fold.name}",
                               cfg.seed)
        score = result.best_val_f1 if fold.scored == "val" else evaluate(result.model, inputs.test,
                                                                         fold.y.test.numpy())[1]
        if self.keep is not None:
            self._keep(result.model, view, inputs, fold.fold, number, result.best_val_f1)
        return score

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


def scored_kits(study: optuna.Study, cost: Sequence[str]) -> list[KitScores]:
    """Every finished kit's costs (positions, then the rest of `cost`) and scores: the rivals a kit is held against
    at its rungs."""
    return [kit_scores(t, cost) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]


def kit_scores(trial: FrozenTrial, cost: Sequence[str]) -> KitScores:
    attrs = trial.user_attrs
    return KitScores(attrs["kit"], (len(attrs["kit"].split(",")), *(attrs[m] for m in cost if m != "positions")),
                     attrs["score_per_fold"])


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
        outcome = f"F1 {trial.values[0]:.3f}" + (f" (stopped after {len(attrs['score_per_fold'])} folds, beaten by "
                                                 f"{attrs['stopped_by']})" if "stopped_by" in attrs else "")
    else:
        outcome = attrs.get("error") or attrs.get("reason") or (
            f"repeats trial {attrs['duplicate_of']} (not trained, not counted)" if "duplicate_of" in attrs
            else trial.state.name.lower())
    return f"trial {trial.number}: {attrs.get('kit')} ({attrs.get('channels', '?')} channels): {outcome}"


def space_of(config: SensorSearchConfig, view: WindowSet, n_classes: int) -> SensorSpace:
    return SensorSpace.build(view.channels, config.search, config.student, n_classes, view.x.shape[2],
                             where="search")


@dataclass
class SearchSetup:
    """What a search's studies share: the config, the data, the space, the storage URL and the trial target."""

    config: SensorSearchConfig
    data: ExperimentData
    space: SensorSpace
    storage: str
    target: int


def setup_search(config: SensorSearchConfig, out_dir: Path, trials: int | None, storage: str | None,
                 log: Callable[[str], None]) -> SearchSetup:
    """The config checked, the data loaded (with its unit warnings logged) and the space built, before training."""
    check_method(config)
    target = config.search.trials if trials is None else trials
    if target < 1:
        raise HarkdError(f"--trials must be >= 1, got {target}")
    data = load_data(config)
    space = space_of(config, data.teacher_view, data.n_classes)
    for line in data.unit_warnings():
        log(f"warning: {line}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trial lines are ours; failures are recorded per trial
    return SearchSetup(config, data, space, storage_urls(Path(out_dir), storage)[0], target)


def _first_kits_are(kits: list) -> str:
    every_modality_set = any(len(modalities) > 1 for kit in kits for _, modalities in kit)
    return f"each of the {len(kits)} " + ("one-position kits" if every_modality_set else "sensor groups alone")


def open_kit_study(setup: SearchSetup, name: str, log: Callable[[str], None]) -> optuna.Study:
    """The study `name` (resumed where it exists), its interrupted trials failed and its first kits queued."""
    space, target = setup.space, setup.target
    study = open_study(setup.storage, name, config_identity(setup.config.raw), setup.config.directions)
    if stale := fail_interrupted(study):
        log(f"{stale} trial(s) of an interrupted invocation will be drawn again")
    first = first_kits(space, target)
    log(f"{name}: {len(space.candidates)} kits within budget over {len(space.positions)} positions; "
        f"{counted(study)} of {min(target, len(space.candidates))} trials done"
        + ("; trying every kit" if len(first) == len(space.candidates) else
           f"; {_first_kits_are(first)} first" if first else ""))
    parametrisation = setup.config.search.parametrisation
    share = PARAMETRISATIONS[parametrisation].share_of_kits(space)
    if share < FEW_KITS:  # TPE draws mostly combinations it cannot train and stops at its draw cap
        log(f"warning: search.parametrisation {parametrisation}: {100 * share:.1f}% of its combinations are kits "
            f"within budget; most draws will be answered as over budget: size_first draws kits only")
    if not is_done(setup, study):
        enqueue_untried(study, first, space, parametrisation)
    return study


def is_done(setup: SearchSetup, study: optuna.Study) -> bool:
    return StopRule(setup.target, len(setup.space.candidates)).done(study)


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread in this process, as `harkd run` and the worker processes train."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def search_sensors(setup: SearchSetup, study: optuna.Study, out_dir: Path, jobs: int = 1,
                   log: Callable[[str], None] = print, ray: RayBackend | None = None,
                   teachers: TeacherStore | None = None) -> None:
    """Run the trials the study misses."""
    config = setup.config
    if not is_done(setup, study):
        with one_thread(), tempfile.TemporaryDirectory(prefix="harkd-sensors-", ignore_cleanup_errors=True) as work:
            folds = scoring_folds(config, setup.data, FoldTeachers(config, setup.data, Path(work), log, teachers, jobs),
                                  config.search.scoring.protocol, config.scored_folds)
            search_on(setup, study, search_data(setup.data, folds), Path(work), Path(out_dir), jobs, log, ray)


def search_on(setup: SearchSetup, study: optuna.Study, prepared: SearchData, work: Path, keep: Path | None,
              jobs: int, log: Callable[[str], None], ray: RayBackend | None) -> None:
    """The trials `study` misses, scored on `prepared`'s folds."""
    scored = "validation" if prepared.folds[0].scored == "val" else "test"
    log(f"trials score on the {scored} windows of {', '.join(prepared.guiding_subjects)}")
    study.set_user_attr("guiding_subjects", prepared.guiding_subjects)
    study.set_user_attr("folds", [f.name for f in prepared.folds])
    run_trials(setup.config, setup.space, prepared, study, setup.storage, setup.target, work, keep, jobs, log, ray)


def fully_scored(study: optuna.Study) -> list[FrozenTrial]:
    """The kits scored on every fold (a kit stopped at a rung is neither on the front nor best at its positions)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if "stopped_by" not in t.user_attrs]


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front of the distinct kits scored on every fold, cheapest first."""
    scored = {t.user_attrs["kit"]: t for t in sorted(fully_scored(study), key=lambda t: t.number, reverse=True)}
    on_front = [t for t in scored.values() if not any(_dominates(o, t) for o in scored.values())]
    return sorted(on_front, key=lambda t: (*t.values[1:], -t.values[0]))


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    """Score no lower, no cost higher, and better in one."""
    keys_a, keys_b = (-a.values[0], *a.values[1:]), (-b.values[0], *b.values[1:])
    return all(x <= y for x, y in zip(keys_a, keys_b)) and keys_a != keys_b


def positions_of(trial: FrozenTrial) -> int:
    return len(trial.user_attrs["kit"].split(","))


def best_by_positions(study: optuna.Study) -> list[FrozenTrial]:
    """The best kit at each number of positions worn (what a factory buys is first a number of devices), whether or
    not a kit with fewer positions scores higher."""
    best: dict[int, FrozenTrial] = {}
    for trial in fully_scored(study):
        size = positions_of(trial)
        if size not in best or trial.values[0] > best[size].values[0]:
            best[size] = trial
    return [best[size] for size in sorted(best)]


__all__ = ["KitObjective", "SearchSetup", "SensorSearchConfig", "best_by_positions", "front", "fully_scored",
           "is_done", "load_sensor_search", "one_thread", "open_kit_study", "parse_sensor_search", "positions_of",
           "search_on", "search_sensors", "sensor_search_yaml", "setup_search"]
