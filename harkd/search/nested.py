"""`harkd search-sensors --nested`: the score of the whole procedure, search included, on workers the search never
saw. For each outer fold of the config's split the search runs again without that fold's test workers (leave-one-
subject-out over the others, harkd.search.search_folds.inner_folds), in a study of its own in the same storage; the
kit it recommends at each number of positions is then trained on the outer fold, as `harkd run` trains it, and scored
on the outer fold's held-out workers. Per number of positions: the mean of those scores over outer folds (the figure
to quote), which kit each outer fold chose and how often the choices agree. A split with fixed test subjects (a
protocol split) has one outer fold, whose search is the search itself (its training subjects, its teacher): its study
serves, and only its choices are scored on the test subjects. Resumable: each outer study keeps its trials and its
outer scores."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import optuna

from harkd.data.splits import Fold
from harkd.errors import HarkdError
from harkd.experiment.teacher_cache import TeacherStore
from harkd.search.search_folds import SPLITS_OF_THEIR_OWN, FoldTeachers, SearchFold, inner_folds, search_data
from harkd.search.sensor_search import (KitObjective, SearchSetup, SensorSearchConfig, best_by_positions, is_done,
                                        one_thread, open_kit_study, positions_of, search_on)

if TYPE_CHECKING:
    from harkd.execution.ray_cluster import RayBackend


@dataclass(frozen=True)
class OuterChoice:
    """What one outer fold's search chose at one number of positions, its score there and on the held-out workers."""

    outer_fold: str
    test_subjects: list[str]
    positions: int
    kit: str
    search_score: float
    test_score: float


def nested_search(setup: SearchSetup, name: str, jobs: int, log: Callable[[str], None], ray: RayBackend | None,
                  teachers: TeacherStore | None) -> list[OuterChoice]:
    """Every outer fold's search (resumed where its study exists) and its choices scored on the outer fold."""
    config = setup.config
    check_nestable(config)
    choices = []
    with one_thread(), tempfile.TemporaryDirectory(prefix="harkd-nested-", ignore_cleanup_errors=True) as work:
        outer_folds = setup.data.folds(config.split, config.seed)
        fold_teachers = FoldTeachers(config, setup.data, Path(work), log, teachers, jobs)
        fold_teachers.prefill(outer_folds)
        for i, outer in enumerate(outer_folds):
            # a split that does not hold workers out fold by fold searches its first fold's training subjects:
            # that search is the first outer fold's, so its study serves
            shared = i == 0 and config.split.kind not in SPLITS_OF_THEIR_OWN
            choices += _outer_fold(setup, name if shared else f"{name}/{outer.name}", outer, fold_teachers,
                                   Path(work), jobs, log, ray)
    return choices


def check_nestable(config: SensorSearchConfig) -> None:
    if config.split.kind == "groups":
        raise HarkdError("--nested: a group split tests every worker in every fold; nesting needs folds that hold "
                         "workers out (split.kind loso, fixed or protocol)")


def _outer_fold(setup: SearchSetup, name: str, outer: Fold, fold_teachers: FoldTeachers, work: Path, jobs: int,
                log: Callable[[str], None], ray: RayBackend | None) -> list[OuterChoice]:
    study = open_kit_study(setup, name, log)
    scored: dict[str, float] = study.user_attrs.get("outer_scores", {})
    chosen = best_by_positions(study) if is_done(setup, study) else []
    if chosen and all(t.user_attrs["kit"] in scored for t in chosen):
        return _choices(outer, chosen, scored)  # finished before: nothing to train, not even the teacher
    inputs, y, teacher = fold_teachers.train(outer)
    if not is_done(setup, study):
        inner = inner_folds(outer, setup.data, setup.config.split, setup.config.seed, (inputs, y, teacher),
                            setup.config.search.scoring.workers)
        search_on(setup, study, search_data(setup.data, inner), work / outer.name, None, jobs, log, ray)
    objective = KitObjective(setup.config, setup.space, search_data(setup.data, []), work / outer.name, None,
                             setup.target)
    chosen = best_by_positions(study)
    for trial in chosen:
        kit = trial.user_attrs["kit"]
        if kit not in scored:
            scored[kit] = objective.train_on(trial.number, setup.space.find_key(kit).kit,
                                             SearchFold(outer, y, inputs, teacher))
            study.set_user_attr("outer_scores", scored)  # kept at once: a killed run keeps what it scored
            log(f"{name}: {kit} scores {scored[kit]:.3f} on {', '.join(outer.test_subjects)}")
    return _choices(outer, chosen, scored)


def _choices(outer: Fold, chosen: list[optuna.trial.FrozenTrial], scored: dict[str, float]) -> list[OuterChoice]:
    return [OuterChoice(outer.name, list(outer.test_subjects), positions_of(t), t.user_attrs["kit"], t.values[0],
                        scored[t.user_attrs["kit"]]) for t in chosen]


def nested_summary(choices: list[OuterChoice]) -> list[dict[str, Any]]:
    """Per number of positions: the outer folds' test scores (mean ± std), the search's own scores of the same
    choices beside them (how optimistic the search is), and how often the outer folds chose the same kit."""
    summary = []
    for positions in sorted({c.positions for c in choices}):
        rows = [c for c in choices if c.positions == positions]
        test = [c.test_score for c in rows]
        kit, agree = Counter(c.kit for c in rows).most_common(1)[0]
        summary.append({"positions": positions, "outer_folds": len(rows), "test_mean": float(np.mean(test)),
                        "test_std": float(np.std(test, ddof=1)) if len(test) > 1 else 0.0,
                        "search_mean": float(np.mean([c.search_score for c in rows])), "most_chosen": kit,
                        "agree": agree, "choices": [asdict(c) for c in rows]})
    return summary


__all__ = ["OuterChoice", "check_nestable", "nested_search", "nested_summary"]
