"""How far a sensor search's kit scores rank kits as their test scores do (issue 25): Spearman's correlation between
the search's score of each kit and the kit's ground-truth test macro-F1 (benchmarks/sensor_ground_truth.py), and per
number of positions the kit the search would recommend against the best kit on test.

    python benchmarks/kit_ranking.py GROUND_TRUTH.json SEARCH.json [--json OUT.json]

SEARCH.json: a `harkd search-sensors` search.json (each trial's `score`; `val_f1` in those written before issue 25);
only kits both files hold are compared. The search recommends, at each number of positions, its best kit scored on
every fold (a kit stopped at a rung is ranked by its estimate but never recommended).
The ground truth's score is the test macro-F1 with the search's KD method (mean over the split's folds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scipy.stats import spearmanr


def search_scores(search: dict) -> dict[str, float]:
    """Each kit's score in the search."""
    field = "score" if any("score" in t for t in search["trials"]) else "val_f1"
    return {t["kit"]: t[field] for t in search["trials"] if t.get(field) is not None}


def recommendable(search: dict) -> set[str]:
    """The kits the search may recommend: scored on every fold."""
    return {t["kit"] for t in search["trials"] if not t.get("stopped_by")}


def recommendations(truth: dict[str, dict], scores: dict[str, float], allowed: set[str]) -> list[dict]:
    """Per number of positions: the search's best kit, the best kit on test, and the test gap between them."""
    rows = []
    for n in sorted({k["positions"] for k in truth.values()}):
        kits = [kit for kit, k in truth.items() if k["positions"] == n and kit in scores]
        if not kits:
            continue
        chosen = max((kit for kit in kits if kit in allowed), key=lambda kit: scores[kit])
        best = max(kits, key=lambda kit: truth[kit]["kd"]["mean"])
        rows.append({"positions": n, "kits": len(kits), "search_chose": chosen,
                     "its_test_f1": truth[chosen]["kd"]["mean"], "best_on_test": best,
                     "best_test_f1": truth[best]["kd"]["mean"],
                     "gap_points": round(100 * (truth[best]["kd"]["mean"] - truth[chosen]["kd"]["mean"]), 2)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ground_truth", type=Path)
    parser.add_argument("search", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args()
    truth = {k["kit"]: k for k in json.loads(args.ground_truth.read_text())["kits"] if "kd" in k}
    search = json.loads(args.search.read_text())
    scores = search_scores(search)
    shared = sorted(set(truth) & set(scores))
    if len(shared) < 3:
        print(f"only {len(shared)} kits in both files: no ranking to compare")
        return 1
    rho, p = spearmanr([scores[k] for k in shared], [truth[k]["kd"]["mean"] for k in shared])
    result = {"command": " ".join(["python", "benchmarks/kit_ranking.py", *sys.argv[1:]]), "kits": len(shared),
              "spearman": round(float(rho), 3), "p_value": float(p),
              "by_positions": recommendations(truth, scores, recommendable(search))}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(shared)} kits: Spearman {result['spearman']:+.3f} (p = {p:.3g}) between the search's scores and "
          f"the test macro-F1")
    for row in result["by_positions"]:
        print(f"{row['positions']} position(s), {row['kits']} kits: the search chose {row['search_chose']} "
              f"({100 * row['its_test_f1']:.2f} on test); best on test {row['best_on_test']} "
              f"({100 * row['best_test_f1']:.2f}); gap {row['gap_points']:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
