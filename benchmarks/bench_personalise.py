"""`harkd personalise` on real data: for every (fold, seed) unit of a run kept with --keep-models, the unit's student
personalised by the unit's teacher to each of the fold's test subjects (workers it never saw), one at a time.

    harkd run configs/dsads.yaml "methods=[none]" --keep-models --out runs/dsads-kept --jobs 2
    python benchmarks/bench_personalise.py runs/dsads-kept [--calibration 0.5] [--method sc_logit] [--bounds]
    python benchmarks/bench_personalise.py runs/dsads-kept --minutes 0.25,0.5,1,2 --out DIR   # the budget curve

The first `calibration` (in time) of each of the worker's recordings is the calibration session the teacher labels;
every model is scored on the second half (on DSADS, the same windows as `configs/dsads-calibration.yaml` scores).
With --bounds, the student fine-tuned on its own labels (self-training) and on the worker's true labels are scored too.

--minutes: the calibration budget curve, minutes of calibration per activity (on a dataset whose recordings each hold
one activity, as DSADS's five-minute recordings do): every budget, with the bounds, scored on the same second half.
Writes DIR/budget.json, DIR/budget.md (a table) and DIR/budget.png (macro-F1 against minutes).

Otherwise writes benchmarks/results/personalise_<dataset>.json; prints mean ± std over (unit, worker) pairs and the
workers whose mean gain over seeds is positive.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harkd.data.catalog import load_windows
from harkd.data.registry import WindowConfig
from harkd.data.splits import recording_key
from harkd.deploy.bundle import load_bundle
from harkd.deploy.personalise import DEFAULT_TRAIN, personalise
from harkd.experiment.config import MethodSpec
from harkd.files import atomic_output

HERE = Path(__file__).resolve().parent
SCORED_FROM = 0.5  # every budget is scored on the second half of each recording
CURVES = (("untouched", "student, untouched"), ("self", "fine-tuned on its own labels (lower bound)"),
          ("teacher", "fine-tuned on the teacher's labels (ours)"), ("true", "fine-tuned on true labels (upper bound)"),
          ("teacher_model", "the teacher itself"))


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def recording_minutes(student) -> float:
    """The median length of the dataset's recordings in minutes (each one activity on DSADS)."""
    windows = load_windows(student.provenance["dataset"], WindowConfig(length=student.window, stride=student.hop,
                                                                       drop_null=False))
    counts = defaultdict(int)
    for subject, session in zip(windows.subjects, windows.sessions):
        counts[(subject, recording_key(str(session)))] += 1
    return statistics.median(counts.values()) * student.hop / student.rate_hz / 60


def units(run: Path, student_file: str):
    """(teacher, student, subject) for every unit and test subject of a kept run."""
    for unit in sorted((run / "models").iterdir()):
        teacher, student = load_bundle(unit / "teacher.pt"), load_bundle(unit / student_file)
        for subject in student.provenance["test_subjects"]:
            yield teacher, student, subject


def scores(report: dict) -> dict:
    """One personalisation's scores by curve name."""
    bounds = report.get("bounds", {})
    return {"untouched": report["before"]["student_macro_f1"], "teacher": report["after"]["student_macro_f1"],
            "teacher_model": report["after"]["teacher_macro_f1"],
            **{k: None if v is None else v["student_macro_f1"] for k, v in bounds.items()}}


def budget_curve(args: argparse.Namespace, method: MethodSpec) -> dict:
    rows, fractions = [], None
    for teacher, student, subject in units(args.run, args.student):
        if fractions is None:
            per_recording = recording_minutes(student)
            fractions = {m: m / per_recording for m in args.minutes}
        for minutes, fraction in fractions.items():
            _, report = personalise(teacher, student, student.provenance["dataset"], subject, fraction,
                                    train=args.train_config, seed=student.provenance["seed"], method=method,
                                    bounds=True, scored_from=SCORED_FROM)
            rows.append({"fold": student.provenance["fold"], "seed": student.provenance["seed"], "subject": subject,
                         "minutes": minutes, "calibration": round(fraction, 4), **scores(report)})
            print(f"{student.provenance['fold']} seed {student.provenance['seed']} {minutes} min: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in scores(report).items() if v is not None), flush=True)
    table = {m: {name: mean_std([r[name] for r in rows if r["minutes"] == m and r[name] is not None])
                 for name, _ in CURVES} for m in args.minutes}
    return {"rows": rows, "table": table, "fractions": fractions}


def write_budget(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    minutes = sorted(result["table"])
    lines = [f"# Calibration budget: {result['dataset']}, {result['method']}", "", f"`{result['command']}`", "",
             "Macro-F1 (%) on the second half of each left-out worker's recordings, mean ± std over folds x seeds.",
             "", "| minutes per activity | " + " | ".join(label for _, label in CURVES) + " |",
             "|---:|" + "---:|" * len(CURVES)]
    lines += [f"| {m} | " + " | ".join(result["table"][m][name] for name, _ in CURVES) + " |" for m in minutes]
    with atomic_output(out / "budget.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n\n![macro-F1 against calibration minutes](budget.png)\n")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, label in CURVES:
        means = [100 * statistics.mean(r[name] for r in result["rows"] if r["minutes"] == m and r[name] is not None)
                 for m in minutes]
        ax.plot(minutes, means, marker="o", label=label, linestyle="--" if name == "teacher_model" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
    ax.set_xlabel("calibration minutes per activity")
    ax.set_ylabel("macro-F1 (%), second half of each recording")
    ax.legend(fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_output(out / "budget.png") as tmp:
        tmp.write_bytes(buffer.getvalue())
    with atomic_output(out / "budget.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


def one_budget(args: argparse.Namespace, method: MethodSpec) -> dict:
    rows = []
    for teacher, student, subject in units(args.run, args.student):
        start = time.perf_counter()
        _, report = personalise(teacher, student, student.provenance["dataset"], subject, args.calibration,
                                args.stride, train=args.train_config, seed=student.provenance["seed"], method=method,
                                bounds=args.bounds)
        rows.append({"fold": student.provenance["fold"], "seed": student.provenance["seed"],
                     "seconds": round(time.perf_counter() - start, 1), **report})
        print(f"{student.provenance['fold']} {subject}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in scores(report).items() if v is not None), flush=True)
    gains = defaultdict(list)
    for row in rows:
        gains[row["subject"]].append(row["after"]["student_macro_f1"] - row["before"]["student_macro_f1"])
    every = [scores(row) for row in rows]
    summary = {name: mean_std([s[name] for s in every if s.get(name) is not None])
               for name, _ in CURVES if any(s.get(name) is not None for s in every)}
    summary["gain_pp"] = mean_std([g for fold in gains.values() for g in fold])
    summary["workers_won"] = f"{sum(statistics.mean(g) > 0 for g in gains.values())}/{len(gains)}"
    summary["seconds_per_unit"] = round(statistics.mean(row["seconds"] for row in rows), 1)
    return {"calibration": args.calibration, "stride": args.stride, "summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `harkd run --keep-models` output folder")
    parser.add_argument("--student", default="student-cnn_student-none.pt", help="the kept student's file name")
    parser.add_argument("--calibration", type=float, default=0.5)
    parser.add_argument("--stride", type=int, default=None, help="window hop (default: the run's)")
    parser.add_argument("--method", default="logit", help="KD method on the teacher's labels (name or YAML)")
    parser.add_argument("--bounds", action="store_true", help="also the self-training and true-label students")
    parser.add_argument("--train", default="{}", help="fine-tuning settings as YAML, e.g. '{epochs: 60, lr: 0.003}'")
    parser.add_argument("--minutes", type=lambda s: [float(m) for m in s.split(",")],
                        help="calibration budgets in minutes per activity: the budget curve")
    parser.add_argument("--out", type=Path, help="with --minutes: the folder for budget.json/.md/.png; else the "
                        "results file (default benchmarks/results/personalise_<dataset>.json)")
    args = parser.parse_args()
    method = MethodSpec.parse(yaml.safe_load(args.method), "--method")
    args.train_config = replace(DEFAULT_TRAIN, **yaml.safe_load(args.train))
    command = shlex.join(["python", "benchmarks/bench_personalise.py", *sys.argv[1:]])
    result = budget_curve(args, method) if args.minutes else one_budget(args, method)
    dataset = load_bundle(next((args.run / "models").iterdir()) / "teacher.pt").provenance["dataset"]
    result = {"command": command, "run": str(args.run), "student": args.student, "method": method.name,
              "dataset": dataset, **result}
    if args.minutes:
        write_budget(result, args.out or Path("runs") / "budget")
        print(json.dumps(result["table"], indent=1, ensure_ascii=False))
        return
    out = args.out or HERE / "results" / f"personalise_{dataset}.json"
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result["summary"], indent=1, ensure_ascii=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
