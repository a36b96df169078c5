"""`harkd personalise` on real data: for every (fold, seed) unit of a run kept with --keep-models, the unit's student
personalised by the unit's teacher to each of the fold's test subjects (workers it never saw), one at a time.

    harkd run configs/dsads.yaml "methods=[none]" --keep-models --out runs/dsads-kept --jobs 2
    python benchmarks/bench_personalise.py runs/dsads-kept [--calibration 0.5] [--stride N]

The first half (in time) of each of the worker's recordings is the calibration session the teacher labels; teacher
and student are scored on the second half (on DSADS, the same windows as `configs/dsads-calibration.yaml` scores).
Writes benchmarks/results/personalise_<dataset>.json and prints mean ± std over (unit, worker) pairs and the workers
whose mean gain over seeds is positive.
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
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt", help="the kept student's file name")
    parser.add_argument("--calibration", type=float, default=0.5)
    parser.add_argument("--stride", type=int, default=None, help="window hop (default: the window length)")
    args = parser.parse_args()

    rows = []
    for unit in sorted((args.run / "models").iterdir()):
        teacher, student = load_bundle(unit / "teacher.pt"), load_bundle(unit / args.student)
        for subject in student.provenance["test_subjects"]:
            start = time.perf_counter()
            _, report = personalise(teacher, student, student.provenance["dataset"], subject, args.calibration,
                                    args.stride, seed=student.provenance["seed"])
            rows.append({"fold": student.provenance["fold"], "seed": student.provenance["seed"],
                         "seconds": round(time.perf_counter() - start, 1), **report})
            print(f"{unit.name} {subject}: student {report['before']['student_macro_f1']:.3f} -> "
                  f"{report['after']['student_macro_f1']:.3f} (teacher {report['after']['teacher_macro_f1']:.3f})")

    gains = defaultdict(list)
    for row in rows:
        gains[row["subject"]].append(row["after"]["student_macro_f1"] - row["before"]["student_macro_f1"])
    summary = {key: mean_std([row[stage][f"{role}_macro_f1"] for row in rows])
               for key, stage, role in (("student_before", "before", "student"), ("student_after", "after", "student"),
                                        ("teacher", "after", "teacher"))}
    summary["gain_pp"] = mean_std([g for fold in gains.values() for g in fold])
    summary["workers_won"] = f"{sum(statistics.mean(g) > 0 for g in gains.values())}/{len(gains)}"
    summary["seconds_per_unit"] = round(statistics.mean(row["seconds"] for row in rows), 1)
    dataset = rows[0]["dataset"]
    result = {"run": str(args.run), "student": args.student, "calibration": args.calibration, "stride": args.stride,
              "summary": summary, "rows": rows,
              "command": f"python benchmarks/bench_personalise.py {args.run} --student {args.student} "
                         f"--calibration {args.calibration}" + (f" --stride {args.stride}" if args.stride else "")}
    out = HERE / "results" / f"personalise_{dataset}.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
