"""How far a sensor search's kit scores rank kits as their test scores do (issue 25): Spearman's correlation between
the search's score of each kit and the kit's ground-truth test macro-F1 (benchmarks/sensor_ground_truth.py), and per
number of positions the kit the search would recommend against the best kit on test.

    python benchmarks/kit_ranking.py GROUND_TRUTH.json SEARCH.json [--more-seeds GT_SEED1.json ...] [--json OUT.json]

SEARCH.json: a `harkd search-sensors` search.json (each trial's `score`; `val_f1` in those written before issue 25),
or another ground truth (the same kits trained with another seed: how far one seed's test scores rank and choose
kits as another's do); only kits both files hold are compared. The search recommends, at each number of positions, its best kit scored on
every fold (a kit stopped at a rung is ranked by its estimate but never recommended). The ground truth's score is the
test macro-F1 with the search's KD method (mean over the split's folds).

A search run with --nested (its outer studies read from search.db beside SEARCH.json) adds, for each outer fold, the
same Spearman for the search that never saw that fold's worker, the Spearman of its scores with that worker's own test
scores beside the best any ranking from the other workers' test scores reaches (the ground truth without that fold),
and per number of positions the nested figure (each outer fold's choice scored on its worker; and the same choices'
scores in the ground truth, which with --more-seeds averages the seeds) against the best kit
and against the best a choice made without each fold's worker reaches on the ground truth (each fold's kit the best on
the other workers' test scores, scored on its worker), which measures how far the best kit on test owes its lead to
having been chosen on the workers it is scored on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import optuna
from scipy.stats import spearmanr


def search_scores(search: dict) -> dict[str, float]:
    """Each kit's score in the search (in another ground truth: its KD test mean)."""
    if "kits" in search:
        return {k["kit"]: k["kd"]["mean"] for k in search["kits"] if "kd" in k}
    field = "score" if any("score" in t for t in search["trials"]) else "val_f1"
    return {t["kit"]: t[field] for t in search["trials"] if t.get(field) is not None}


def recommendable(search: dict) -> set[str]:
    """The kits the search may recommend: scored on every fold (every kit of another ground truth)."""
    if "kits" in search:
        return set(search_scores(search))
    return {t["kit"] for t in search["trials"] if not t.get("stopped_by")}


def rho(a: dict[str, float], b: dict[str, float]) -> float:
    shared = sorted(set(a) & set(b))
    return round(float(spearmanr([a[k] for k in shared], [b[k] for k in shared])[0]), 3)


def recommendations(truth: dict[str, dict], scores: dict[str, float], allowed: set[str]) -> list[dict]:
    """Per number of positions: the search's best kit, the best kit on test (whether the search tried it or not), and
    the test gap between them."""
    rows = []
    for n in sorted({k["positions"] for k in truth.values()}):
        every = [kit for kit, k in truth.items() if k["positions"] == n]
        kits = [kit for kit in every if kit in scores]
        if not kits:
            continue
        chosen = max((kit for kit in kits if kit in allowed), key=lambda kit: scores[kit])
        best = max(every, key=lambda kit: truth[kit]["kd"]["mean"])
        rows.append({"positions": n, "kits": len(kits), "of": len(every), "search_chose": chosen,
                     "its_test_f1": truth[chosen]["kd"]["mean"], "best_on_test": best,
                     "best_test_f1": truth[best]["kd"]["mean"],
                     "gap_points": round(100 * (truth[best]["kd"]["mean"] - truth[chosen]["kd"]["mean"]), 2)})
    return rows


def per_fold_table(kits) -> dict[str, dict[str, float]]:
    """kit -> fold -> the kit's test macro-F1 with KD on that fold."""
    return {k["kit"]: {name.split("/")[0]: f1 for name, f1 in k["kd"]["per_fold"].items()} for k in kits}


def load_truth(paths: list[Path]) -> dict[str, dict]:
    """kit -> its ground-truth entry; with several files (the same kits run with other seeds), each fold's KD score
    is the mean over the files' seeds and the kit's mean is taken over those."""
    files = [{k["kit"]: k for k in json.loads(path.read_text())["kits"] if "kd" in k} for path in paths]
    truth = {}
    for kit in set.intersection(*(set(f) for f in files)):
        tables = [per_fold_table([f[kit]])[kit] for f in files]
        per_fold = {fold: float(np.mean([t[fold] for t in tables])) for fold in tables[0]}
        truth[kit] = {**files[0][kit], "kd": {"mean": float(np.mean(list(per_fold.values()))), "per_fold": per_fold,
                                              "seeds": len(files)}}
    return truth


def outer_studies(search: dict, search_json: Path) -> dict[str, optuna.Study]:
    """The nested search's outer studies (named "<study>/<outer fold>") in the search.db beside search.json."""
    storage = f"sqlite:///{search_json.parent / 'search.db'}"
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)
             if s.study_name.startswith(search["study"] + "/")]
    return {name.split("/", 1)[1]: optuna.load_study(study_name=name, storage=storage) for name in sorted(names)}


def choice_without_the_worker(table: dict[str, dict[str, float]], kits: list[str], folds: list[str]) -> float:
    """The best a choice made without each fold's worker can do on these scores: for each fold, the kit with the best
    mean test score over the other workers (every kit scored, no rung, no search), scored on that fold's worker; the
    mean over folds. The best kit on test is chosen with every worker, so it sits above this by the winner's curse."""
    def chosen(fold: str) -> str:
        return max(kits, key=lambda kit: np.mean([table[kit][f] for f in folds if f != fold]))
    return float(np.mean([table[chosen(fold)][fold] for fold in folds]))


def nested_ranking(truth: dict[str, dict], search: dict, search_json: Path) -> dict:
    table, means = per_fold_table(truth.values()), {kit: k["kd"]["mean"] for kit, k in truth.items()}
    folds = sorted(next(iter(table.values())))
    rows = []
    for fold, study in outer_studies(search, search_json).items():
        scores = {t.user_attrs["kit"]: t.values[0] for t in study.trials if t.state.name == "COMPLETE"}
        worker = {kit: table[kit][fold] for kit in means}
        rest = {kit: float(np.mean([table[kit][f] for f in folds if f != fold])) for kit in means}
        rows.append({"outer_fold": fold, "kits": len(scores), "spearman_with_test_means": rho(scores, means),
                     "spearman_with_its_worker": rho(scores, worker),
                     "other_workers_test_with_its_worker": rho(rest, worker)})
    figures = []
    for row in search["nested"]:
        n = row["positions"]
        kits = [kit for kit, k in truth.items() if k["positions"] == n]
        best = max(kits, key=means.get)
        hindsight_free = choice_without_the_worker(table, kits, folds)
        # the choices' scores in the ground truth: the nested figure itself with the seed it ran, else the seeds' mean
        chosen = float(np.mean([table[c["kit"]][c["outer_fold"]] for c in row["choices"]]))
        figures.append({"positions": n, "nested_test_f1": row["test_mean"], "best_kit": best,
                        "best_kit_test_f1": means[best], "its_choices_on_the_ground_truth_f1": chosen,
                        "gap_points": round(100 * (means[best] - chosen), 2),
                        "choice_without_the_worker_f1": hindsight_free,
                        "its_gap_points": round(100 * (means[best] - hindsight_free), 2),
                        "most_chosen": row["most_chosen"], "agree": row["agree"], "outer_folds": row["outer_folds"]})
    return {"by_outer_fold": rows, "by_positions": figures,
            "mean": {k: round(float(np.mean([r[k] for r in rows])), 3) for k in
                     ("spearman_with_test_means", "spearman_with_its_worker", "other_workers_test_with_its_worker")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("search", type=Path)
    parser.add_argument("--more-seeds", type=Path, nargs="+", default=[], metavar="GROUND_TRUTH.json",
                        help="the same kits' ground truth with other seeds: each fold's score averaged over them")
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args()
    truth = load_truth([args.ground_truth, *args.more_seeds])
    search = json.loads(args.search.read_text())
    scores = search_scores(search)
    shared = sorted(set(truth) & set(scores))
    if len(shared) < 3:
        print(f"only {len(shared)} kits in both files: no ranking to compare")
        return 1
    rho_all, p = spearmanr([scores[k] for k in shared], [truth[k]["kd"]["mean"] for k in shared])
    result = {"command": " ".join(["python", "benchmarks/kit_ranking.py", *sys.argv[1:]]), "kits": len(shared),
              "spearman": round(float(rho_all), 3), "p_value": float(p),
              "by_positions": recommendations(truth, scores, recommendable(search))}
    print(f"{len(shared)} kits: Spearman {result['spearman']:+.3f} (p = {p:.3g}) between the search's scores and "
          f"the test macro-F1")
    for row in result["by_positions"]:
        print(f"{row['positions']} position(s), {row['kits']} of {row['of']} kits tried: the search chose "
              f"{row['search_chose']} "
              f"({100 * row['its_test_f1']:.2f} on test); best on test {row['best_on_test']} "
              f"({100 * row['best_test_f1']:.2f}); gap {row['gap_points']:.2f} points")
    if search.get("nested"):
        result["nested"] = nested_ranking(truth, search, args.search)
        mean = result["nested"]["mean"]
        print(f"nested, mean over {len(result['nested']['by_outer_fold'])} outer folds: Spearman "
              f"{mean['spearman_with_test_means']:+.3f} with the test means; with the held-out worker's own test "
              f"scores {mean['spearman_with_its_worker']:+.3f} (the other workers' test scores reach "
              f"{mean['other_workers_test_with_its_worker']:+.3f})")
        for row in result["nested"]["by_positions"]:
            print(f"nested, {row['positions']} position(s): {100 * row['nested_test_f1']:.2f} on unseen workers; "
                  f"best kit {row['best_kit']} {100 * row['best_kit_test_f1']:.2f}; gap {row['gap_points']:.2f} "
                  f"points; {row['most_chosen']} chosen by {row['agree']}/{row['outer_folds']}; its choices on the "
                  f"ground truth {100 * row['its_choices_on_the_ground_truth_f1']:.2f}; the best choice "
                  f"without the worker {100 * row['choice_without_the_worker_f1']:.2f} "
                  f"(gap {row['its_gap_points']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
