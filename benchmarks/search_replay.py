"""The sensor search replayed over measured scores (issue 25): how often it recommends the best kit at each number of
positions with fewer trials than the space has kits, for each parametrisation of the space TPE draws from and several
sampler seeds, at no training cost.

    python benchmarks/search_replay.py GROUND_TRUTH.json CONFIG [overrides] --trials 10 --seeds 10 [--json OUT] \
        [--shuffle] [--stop-rule every|bonferroni|best-rival]

A stop is wrong when the stopped kit's ground-truth mean is above its rival's. --stop-rule replays a rule other than
the search's own (`every`: a kit stops when any rival of its size and no greater cost beats it at the configured
confidence), to measure what the many comparisons cost: `bonferroni` tests each of the m rivals at 1 - (1 - c) / m,
`best-rival` tests only the rival with the highest mean on the kit's folds.
GROUND_TRUTH.json: benchmarks/sensor_ground_truth.py's kits, each with its KD student's test macro-F1 per fold. Each
(parametrisation, seed) runs the search's own trial logic in an in-memory Optuna study (its queue, sampler, rungs and
stopping rule, harkd.search.sensor_search.KitObjective) with one change: a kit's score on a fold is read from the
ground truth instead of trained. That is the same number: the search trains and scores a kit on a leave-one-subject-out
fold exactly as `harkd run` does (tests/test_sensor_search.py holds them equal). It is not a search run: no model is
trained; it measures what the sampler and the rungs choose given the measured scores.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kit_ranking import per_fold_table  # noqa: E402

from harkd.search import kit_scores  # noqa: E402
from harkd.search.kit_scores import KitScores  # noqa: E402
from harkd.search.kit_trials import PARAMETRISATIONS, StopRule, enqueue_untried, first_kits  # noqa: E402
from harkd.search.search_folds import SearchData, load_data  # noqa: E402
from harkd.search.sensor_search import (KitObjective, best_by_positions, load_sensor_search, optimize,  # noqa: E402
                                        space_of)
from harkd.search.sensor_space import kit_key  # noqa: E402


def eligible_rivals(kit: KitScores, rivals) -> list[KitScores]:
    """The rivals the rule may hold `kit` against: as many positions, no greater cost, scored on the kit's folds."""
    return [r for r in rivals if r.kit != kit.kit and r.costs_no_more_than(kit) and set(kit.by_fold) <= set(r.by_fold)]


def beaten_by_bonferroni(kit: KitScores, rivals, confidence: float) -> KitScores | None:
    eligible = eligible_rivals(kit, rivals)
    return SEARCH_RULE(kit, eligible, 1 - (1 - confidence) / len(eligible)) if eligible else None


def beaten_by_best_rival(kit: KitScores, rivals, confidence: float) -> KitScores | None:
    eligible = eligible_rivals(kit, rivals)
    if not eligible:
        return None
    best = max(eligible, key=lambda r: np.mean([r.by_fold[f] for f in kit.by_fold]))
    return SEARCH_RULE(kit, [best], confidence)


SEARCH_RULE = kit_scores.beaten_by
STOP_RULES = {"every": SEARCH_RULE, "bonferroni": beaten_by_bonferroni, "best-rival": beaten_by_best_rival}


class ReplayedObjective(KitObjective):
    """The search's trial with each fold's score read from the ground truth."""

    def __init__(self, *args, table: dict[str, dict[str, float]]):
        super().__init__(*args)
        self.table, self.trained = table, 0

    def train_on(self, number, kit, fold) -> float:
        self.trained += 1
        return self.table[kit_key(kit)][fold.name]


def replay(config, space, view, table, folds, parametrisation: str, trials: int, seed: int,
           shuffle: bool = False) -> dict:
    """One search over the table: per number of positions, the kit it recommends; and the folds it trained. With
    `shuffle`, the queued kits in an order drawn by `seed` (which kits are tried first decides which can stop)."""
    data = SearchData(view, ["?"], None, [SimpleNamespace(name=f) for f in folds])
    objective = ReplayedObjective(config, space, data, Path("."), None, trials, table=table)
    study = optuna.create_study(directions=config.directions)
    queued = first_kits(space, trials)
    if shuffle:
        random.Random(seed).shuffle(queued)
    enqueue_untried(study, queued, space, parametrisation)
    optimize(study, objective, StopRule(trials, len(space.candidates)), seed)
    chosen = {len(t.user_attrs["kit"].split(",")): t.user_attrs["kit"] for t in best_by_positions(study)}
    stops = [(t.user_attrs["kit"], t.user_attrs["stopped_by"]) for t in study.trials if "stopped_by" in t.user_attrs]
    return {"chosen": chosen, "folds_trained": objective.trained, "stops": stops,
            "kits_trained": sum(t.state.name == "COMPLETE" for t in study.trials), "draws": len(study.trials)}


def summary(runs: list[dict], truth_means: dict[str, float], positions: list[int]) -> dict:
    """Per number of positions: how often the best kit was recommended, and the mean test gap to it (points)."""
    rows = {}
    for n in positions:
        best = max((k for k, m in truth_means.items() if len(k.split(",")) == n), key=truth_means.get)
        gaps = [100 * (truth_means[best] - truth_means[r["chosen"][n]]) for r in runs if n in r["chosen"]]
        rows[n] = {"best": best, "found_best": sum(r["chosen"].get(n) == best for r in runs), "runs": len(runs),
                   "mean_gap_points": round(float(np.mean(gaps)), 2), "max_gap_points": round(float(max(gaps)), 2)}
    stops = [stop for r in runs for stop in r["stops"]]
    wrong = [stop for stop in stops if truth_means[stop[0]] > truth_means[stop[1]]]
    return {"by_positions": rows, "mean_folds_trained": float(np.mean([r["folds_trained"] for r in runs])),
            "stops": len(stops), "wrong_stops": len(wrong),
            "mean_draws": float(np.mean([r["draws"] for r in runs]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("config", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--shuffle", action="store_true", help="queue the first kits in an order drawn by each seed")
    parser.add_argument("--stop-rule", choices=sorted(STOP_RULES), default="every")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kit_scores.beaten_by = STOP_RULES[args.stop_rule]  # the rungs look the rule up in kit_scores at each stop
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    truth = json.loads(args.ground_truth.read_text())
    table = per_fold_table(truth["kits"])
    config = load_sensor_search(args.config, args.overrides)
    data = load_data(config)
    space = space_of(config, data.teacher_view, data.n_classes)
    missing = [kit_key(c.kit) for c in space.candidates if kit_key(c.kit) not in table]
    if missing:
        sys.exit(f"{args.ground_truth}: no ground truth for {len(missing)} kit(s) of the space, e.g. {missing[0]}")
    folds = sorted(next(iter(table.values())))
    means = {kit: float(np.mean(list(scores.values()))) for kit, scores in table.items()}
    positions = sorted({c.positions for c in space.candidates})
    result = {"command": " ".join(["python", "benchmarks/search_replay.py", *sys.argv[1:]]),
              "space_size": len(space.candidates), "trials": args.trials, "seeds": args.seeds}
    for name in sorted(PARAMETRISATIONS):
        config = load_sensor_search(args.config, [*args.overrides, f"search.parametrisation={name}"])
        runs = [replay(config, space, data.teacher_view, table, folds, name, args.trials, seed, args.shuffle)
                for seed in range(args.seeds)]
        result[name] = {**summary(runs, means, positions), "runs": runs}
        for n, row in result[name]["by_positions"].items():
            print(f"{name}: {n} position(s): best {row['best']} recommended in {row['found_best']}/{row['runs']}; "
                  f"gap {row['mean_gap_points']:.2f} (max {row['max_gap_points']:.2f}) points")
        print(f"{name}: {result[name]['mean_folds_trained']:.0f} folds trained, {result[name]['mean_draws']:.0f} "
              f"draws on average; {result[name]['stops']} stops, {result[name]['wrong_stops']} of a kit better on "
              f"the ground truth than the rival that stopped it")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
