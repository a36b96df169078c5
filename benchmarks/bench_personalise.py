"""`harkd personalise` on real data: every (fold, seed) unit of a leave-one-subject-out run kept with --keep-models,
its student personalised to the fold's left-out worker by the fold's teacher.

    harkd run configs/dsads.yaml "methods=[none]" --keep-models --out runs/dsads-kept --jobs 2
    python benchmarks/bench_personalise.py runs/dsads-kept [--calibration 0.5]

The first half (in time) of each of the worker's recordings is the calibration session the teacher labels; teacher
and student are scored on the second half, the same windows as `configs/dsads-calibration.yaml` scores. Writes
benchmarks/results/personalise_<dataset>.json and prints mean ± std over units and the folds won.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

from harkd.deploy.bundle import load_bundle
from harkd.deploy.personalise import personalise

HERE = Path(__file__).resolve().parent


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt", help="the kept student's file name")
    parser.add_argument("--calibration", type=float, default=0.5)
    args = parser.parse_args()

    rows = []
    for unit in sorted((args.run / "models").iterdir()):
        teacher, student = load_bundle(unit / "teacher.pt"), load_bundle(unit / args.student)
        (subject,) = student.provenance["test_subjects"]
        start = time.perf_counter()
        _, report = personalise(teacher, student, student.provenance["dataset"], subject, args.calibration,
                                seed=student.provenance["seed"])
        rows.append({"fold": student.provenance["fold"], "seed": student.provenance["seed"], "subject": subject,
                     "seconds": round(time.perf_counter() - start, 1), **report})
        print(f"{unit.name}: student {report['before']['student_macro_f1']:.3f} -> "
              f"{report['after']['student_macro_f1']:.3f} (teacher {report['after']['teacher_macro_f1']:.3f})")

    gains = defaultdict(list)
    for row in rows:
        gains[row["fold"]].append(row["after"]["student_macro_f1"] - row["before"]["student_macro_f1"])
    summary = {key: mean_std([row[stage][f"{role}_macro_f1"] for row in rows])
               for key, stage, role in (("student_before", "before", "student"), ("student_after", "after", "student"),
                                        ("teacher", "after", "teacher"))}
    summary["gain_pp"] = mean_std([g for fold in gains.values() for g in fold])
    summary["folds_won"] = f"{sum(statistics.mean(g) > 0 for g in gains.values())}/{len(gains)}"
    summary["seconds_per_unit"] = round(statistics.mean(row["seconds"] for row in rows), 1)
    dataset = rows[0]["dataset"]
    result = {"run": str(args.run), "student": args.student, "calibration": args.calibration, "summary": summary,
              "rows": rows, "command": f"python benchmarks/bench_personalise.py {args.run} --student {args.student} "
                                      f"--calibration {args.calibration}"}
    out = HERE / "results" / f"personalise_{dataset}.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
