"""The sensor search's trials as an Optuna study keeps them: how a kit is drawn, which trials count (a kit drawn
again is answered from the study, a trial stopped by an interrupt is drawn again), when the study stops, and the kits
queued before TPE draws any."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from harkd.search.sensor_space import Kit, SensorSpace, kit_key

FINISHED = (TrialState.COMPLETE, TrialState.FAIL)
DRAWS_PER_TRIAL = 20  # the most kits drawn per counted trial before the search stops (repeats are free but finite)


class SizeFirst:
    """How many positions, which ones, then each one's modalities: a define-by-run space, so that TPE learns the
    size and the positions of good kits separately (a position's modalities are one parameter across sizes)."""

    def share_of_kits(self, space: SensorSpace) -> float:
        """Every draw is a kit of the space."""
        return 1.0

    def suggest(self, trial: optuna.Trial, space: SensorSpace) -> Kit:
        size = trial.suggest_categorical("positions", space.sizes())
        worn = trial.suggest_categorical(f"worn_{size}", space.position_sets(size)).split("+")
        return tuple((p, tuple(trial.suggest_categorical(p, ["+".join(m) for m in space.choices[p]]).split("+")))
                     for p in worn)

    def params(self, kit: Kit, space: SensorSpace) -> dict[str, Any]:
        return {"positions": len(kit), f"worn_{len(kit)}": "+".join(p for p, _ in kit),
                **{p: "+".join(m) for p, m in kit}}


class PerPosition:
    """Each position absent or worn with one of its modality sets, all in every trial: what a trial says about a
    position carries to every kit that shares it. Combinations outside the space (no position, too many, over the
    channel budget) are drawn and answered as over budget, without training."""

    def share_of_kits(self, space: SensorSpace) -> float:
        """The share of combinations that are kits of the space (the rest are drawn and answered as over budget)."""
        return len(space.candidates) / math.prod(1 + len(space.choices[p]) for p in space.positions)

    def suggest(self, trial: optuna.Trial, space: SensorSpace) -> Kit:
        drawn = {p: trial.suggest_categorical(p, [ABSENT, *("+".join(m) for m in space.choices[p])])
                 for p in space.positions}
        return tuple((p, tuple(choice.split("+"))) for p, choice in drawn.items() if choice != ABSENT)

    def params(self, kit: Kit, space: SensorSpace) -> dict[str, Any]:
        worn = dict(kit)
        return {p: "+".join(worn[p]) if p in worn else ABSENT for p in space.positions}


ABSENT = "absent"
PARAMETRISATIONS = {"size_first": SizeFirst(), "per_position": PerPosition()}


def twin(trial: optuna.Trial, key: str) -> FrozenTrial | None:
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


def taken(study: optuna.Study) -> int:
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
        return taken(study) + 1 >= self.target or len(study.trials) >= self.cap

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
    otherwise every one-position kit when those fill at most half the budget (which one sensor to wear is then
    answered over the whole choice, not over TPE's draws), else each sensor group alone (one position, one modality)
    when those do: the front's cheap end, and what TPE learns the good positions and modalities from."""
    if len(space.candidates) <= target:
        return [c.kit for c in space.candidates]
    alone = [c.kit for c in space.candidates if c.positions == 1]
    groups = [kit for kit in alone if len(kit[0][1]) == 1]
    return next((kits for kits in (alone, groups) if len(kits) <= target // 2), [])


def enqueue_untried(study: optuna.Study, kits: list[Kit], space: SensorSpace, parametrisation: str) -> None:
    """Queue each of `kits` not yet tried or queued (a resumed search queues only what it misses)."""
    seen = {t.user_attrs.get("kit") for t in study.get_trials(deepcopy=False, states=FINISHED) if is_counted(t)}
    queued = [t.system_attrs.get("fixed_params") for t in
              study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
    for kit in kits:
        params = PARAMETRISATIONS[parametrisation].params(kit, space)
        if kit_key(kit) not in seen and params not in queued:
            study.enqueue_trial(params)


__all__ = ["ABSENT", "DRAWS_PER_TRIAL", "FINISHED", "PARAMETRISATIONS", "PerPosition", "SizeFirst", "StopRule",
           "counted", "enqueue_untried", "fail_interrupted", "first_kits", "is_counted", "sampler", "taken", "twin"]
