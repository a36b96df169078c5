"""Screen personalisation methods on kept models: for every (fold, seed) unit of a `harkd run --keep-models` output,
every named adaptation variant and every calibration budget, the unit's student personalised to the left-out worker
(the unit's teacher labels the session), with the bounds, all scored on the same windows: the second half of each of
the worker's recordings.

    harkd run configs/dsads.yaml "methods=[none]" "seeds=[0]" --keep-models --out runs/kept-s0 --jobs 2
    python benchmarks/bench_adapt.py runs/kept-s0 --variants benchmarks/adapt-variants.yaml --minutes 0.25,1 \
        --out benchmarks/results/dsads-adapt-screen --jobs 2

--variants: a YAML mapping of variant names to {adapt: {...}, stride: N, train: {...}, method: ...} (every key
optional; see harkd.personalise.adapt), or --only NAME,... of them. --sources: label sources fine-tuned (teacher is
ours, and "guarded", the guard's choice between it and the untouched student, is scored with it; self and true the
bounds). Rows go to OUT/rows.jsonl as they finish (a rerun skips the rows it has, so a killed
screen resumes); OUT/screen.md tables mean ± std over units, % of the teacher on the same windows, paired Δ against
the untouched student and folds won.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from harkd.data.catalog import load_recordings, load_windows
from harkd.data.registry import WindowConfig
from harkd.models.bundle import load_bundle
from harkd.files import atomic_output
from harkd.metrics import macro_f1
from harkd.personalise.adapt import AdaptSpec, Replay, axis_groups
from harkd.personalise.guard import guard, teacher_refit
from harkd.personalise.session import SessionCut, contiguous_segments, shown_activities
from harkd.personalise.tune import DEFAULT_TRAIN, LOGIT, Adaptation, FrozenTeacher, fine_tune, labels_of
from harkd.personalise.worker import Worker
from harkd.train.methods import MethodSpec

SCORED_FROM = 0.5


@dataclass(frozen=True)
class Variant:
    name: str
    adapt: AdaptSpec
    stride: int | None
    train: dict
    method: MethodSpec


def parse_variants(path: Path, only: list[str] | None) -> list[Variant]:
    raw = yaml.safe_load(path.read_text())
    variants = [Variant(name, AdaptSpec(**(v or {}).get("adapt", {})), (v or {}).get("stride"),
                        (v or {}).get("train", {}),
                        MethodSpec.parse((v or {}).get("method"), name) if (v or {}).get("method") else LOGIT)
                for name, v in raw.items()]
    return [v for v in variants if only is None or v.name in only]


def class_f1(y: np.ndarray, predicted: np.ndarray, classes: list[int]) -> float | None:
    """The mean F1 of some classes (each class's F1 as macro-F1 computes it); None for no class."""
    if not classes:
        return None
    scores = [2 * np.sum((y == c) & (predicted == c)) / max(1, np.sum(y == c) + np.sum(predicted == c))
              for c in classes]
    return round(float(np.mean(scores)), 5)


def unit_rows(task: tuple) -> list[dict]:
    """Every (budget, variant, source) row of one unit's one worker not yet in `done`."""
    unit, subject, variants, minutes, sources, activities, done = task
    torch.set_num_threads(1)
    teacher_b, student_b = load_bundle(unit / "teacher.pt"), load_bundle(unit / STUDENT)
    dataset, seed, fold = (student_b.provenance[k] for k in ("dataset", "seed", "fold"))
    windowing = WindowConfig(length=student_b.window, stride=student_b.hop, drop_null=False)
    windows, recordings = load_windows(dataset, windowing), load_recordings(dataset)
    teacher_in = partial(teacher_b.normalised_inputs, where="teacher")
    student_in = partial(student_b.normalised_inputs, where="student")
    train_windows = windows.subset(np.flatnonzero(~np.isin(windows.subjects, student_b.provenance["test_subjects"])))
    y_train = train_windows.targets_for(student_b.class_names)
    keep = y_train >= 0
    replay = Replay(torch.from_numpy(student_in(train_windows.subset(np.flatnonzero(keep)))),
                    torch.from_numpy(y_train[keep]))
    axes = axis_groups(student_b.channel_names, np.asarray(student_b.mean), np.asarray(student_b.std))
    teacher, student = FrozenTeacher(teacher_b.build_teacher()), student_b.build()
    join = contiguous_segments(dataset)
    rows = []
    for m in minutes:
        for variant in variants:
            cut = SessionCut(minutes=m, stride=variant.stride, activities=activities)
            worker = Worker.of(recordings, (windows, windows), windowing, subject, cut, SCORED_FROM, join,
                               (teacher_in, student_in), student_b.class_names, seed)
            shown = [student_b.class_names.index(n) for n in shown_activities(recordings, subject, cut, seed)
                     if n in student_b.class_names]
            unshown = [c for c in range(len(student_b.class_names)) if c not in shown]

            def f1(model, x=worker.scored_student, field=""):
                said = labels_of(model, x)
                if field:
                    return {f"{field}_shown": class_f1(worker.y_scored, said, shown),
                            f"{field}_unshown": class_f1(worker.y_scored, said, unshown)}
                return round(macro_f1(worker.y_scored, said), 5)

            base = {"fold": fold, "seed": seed, "subject": subject, "minutes": m, "variant": variant.name,
                    "session_windows": len(worker.session.x_student)}
            fixed = {"untouched": f1(student), "teacher_model": f1(teacher.model, worker.scored_teacher)}
            if activities is not None:
                fixed.update(f1(student, field="untouched"))
            how = Adaptation(variant.adapt, replace(DEFAULT_TRAIN, **variant.train), variant.method, replay, axes)
            for source in sources:
                if (fold, seed, subject, m, variant.name, source) in done:
                    continue
                with tempfile.TemporaryDirectory() as work:
                    tuned = fine_tune(student, source, worker.session, teacher, how, len(student_b.class_names),
                                      seed, Path(work))
                by_shown = {} if activities is None or tuned is None else f1(tuned.model, field="f1")
                rows.append({**base, **fixed, "source": source, "f1": None if tuned is None else f1(tuned.model),
                             **by_shown})
                if source == "teacher":  # what the product ships: the guard's choice
                    verdict = guard(student, tuned, worker.session, teacher_refit(
                        student, worker.session, teacher, how, len(student_b.class_names), seed))
                    by_shown = {} if activities is None else f1(verdict.model, field="f1")
                    rows.append({**base, **fixed, "source": "guarded", "f1": f1(verdict.model),
                                 "kept": verdict.kept, "agreement": verdict.agreement, **by_shown})
                print(f"{fold} seed {seed} {m} min {variant.name} {source}: {rows[-1]['f1']} "
                      f"(untouched {fixed['untouched']}, teacher {fixed['teacher_model']})", flush=True)
    return rows


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def table(rows: list[dict]) -> list[str]:
    """One line per (budget, variant, source): mean ± std, % of the teacher, paired Δ against untouched, folds won
    (a fold's mean over seeds)."""
    lines = ["| min/activity | variant | labels | macro-F1 | % of teacher | Δ vs untouched | folds won |",
             "|---:|---|---|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["f1"] is not None:
            groups.setdefault((r["minutes"], r["variant"], r["source"]), []).append(r)
    for (m, variant, source), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        share = 100 * statistics.mean(r["f1"] for r in rs) / statistics.mean(r["teacher_model"] for r in rs)
        by_fold: dict[str, list[float]] = {}
        for r in rs:
            by_fold.setdefault(r["fold"], []).append(r["f1"] - r["untouched"])
        won = sum(statistics.mean(d) > 0 for d in by_fold.values())
        delta = 100 * statistics.mean(d for ds in by_fold.values() for d in ds)
        lines.append(f"| {m:g} | {variant} | {source} | {mean_std([r['f1'] for r in rs])} | {share:.0f}% | "
                     f"{delta:+.2f} | {won}/{len(by_fold)} |")
    return lines


def partial_table(rows: list[dict]) -> list[str]:
    """For a partial session: the shown and the other activities' F1 beside the untouched student's, paired."""
    rows = [r for r in rows if r.get("f1_shown") is not None and r.get("f1_unshown") is not None]
    if not rows:
        return []
    lines = ["Partial sessions: mean F1 of the activities the session showed and of the others, against the untouched "
             "student on the same windows (Δ paired per unit; folds won/lost by their mean Δ over seeds).", "",
             "| min/activity | variant | labels | shown | Δ shown | others | Δ others | others: folds won/lost |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["minutes"], r["variant"], r["source"]), []).append(r)
    for (m, variant, source), rs in sorted(groups.items()):
        delta = lambda key: [r[f"f1_{key}"] - r[f"untouched_{key}"] for r in rs]  # noqa: E731
        by_fold: dict[str, list[float]] = {}
        for r in rs:
            by_fold.setdefault(r["fold"], []).append(r["f1_unshown"] - r["untouched_unshown"])
        won = sum(statistics.mean(d) > 0 for d in by_fold.values())
        lost = sum(statistics.mean(d) < 0 for d in by_fold.values())
        lines.append(f"| {m:g} | {variant} | {source} | {mean_std([r['f1_shown'] for r in rs])} | "
                     f"{100 * statistics.mean(delta('shown')):+.2f} | {mean_std([r['f1_unshown'] for r in rs])} | "
                     f"{100 * statistics.mean(delta('unshown')):+.2f} | {won}/{lost} |")
    return ["", *lines]


def plot_budget(rows: list[dict], path: Path) -> None:
    """Macro-F1 against calibration minutes: each variant's label sources, the untouched student and the teacher."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    minutes = sorted({r["minutes"] for r in rows})
    if len(minutes) < 2 or len({r["variant"] for r in rows}) > 2:  # a screen of many variants reads as the table
        return
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    curves: dict[str, list[float]] = {}
    for m in minutes:
        at = [r for r in rows if r["minutes"] == m]
        one = {(r["fold"], r["seed"]): r for r in at}.values()
        curves.setdefault("the teacher itself", []).append(100 * statistics.mean(r["teacher_model"] for r in one))
        curves.setdefault("student, untouched", []).append(100 * statistics.mean(r["untouched"] for r in one))
        for key in sorted({(r["variant"], r["source"]) for r in at}):
            scores = [r["f1"] for r in at if (r["variant"], r["source"]) == key and r["f1"] is not None]
            curves.setdefault(f"{key[0]}: {LABELS.get(key[1], key[1])}", []).append(100 * statistics.mean(scores))
    for name, values in curves.items():
        ax.plot(minutes, values, marker="o", label=name, linestyle="--" if "teacher itself" in name else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
    ax.set_xlabel("calibration minutes per activity")
    ax.set_ylabel("macro-F1 (%), second half of each recording")
    ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


LABELS = {"teacher": "teacher's labels", "guarded": "teacher's labels, guarded (ships)",
          "self": "own labels (lower bound)", "true": "true labels (upper bound)"}


def summary(rows: list[dict], command: str, out: Path) -> str:
    by_budget: dict[float, list[dict]] = {}
    for r in rows:
        by_budget.setdefault(r["minutes"], []).append(r)
    fixed = ["| min/activity | untouched student | teacher |", "|---:|---:|---:|"]
    for m, rs in sorted(by_budget.items()):
        one = {(r["fold"], r["seed"]): r for r in rs}.values()
        fixed.append(f"| {m:g} | {mean_std([r['untouched'] for r in one])} | "
                     f"{mean_std([r['teacher_model'] for r in one])} |")
    return "\n".join(["# Personalisation screen", "", f"`{command}`", "",
                      "Macro-F1 (%) on the second half of each left-out worker's recordings, mean ± std over units;"
                      " Δ paired per unit against the untouched student; a fold is won when its mean Δ over seeds "
                      "is positive.", "", *fixed, "", *table(rows), *partial_table(rows), "",
                      "![macro-F1 against calibration minutes](budget.png)" if (out / "budget.png").is_file() else "",
                      ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="kept runs (e.g. one per seed)")
    parser.add_argument("--variants", type=Path, required=True)
    parser.add_argument("--only", type=lambda s: s.split(","), default=None)
    parser.add_argument("--minutes", type=lambda s: [float(m) for m in s.split(",")], required=True)
    parser.add_argument("--sources", type=lambda s: s.split(","), default=["teacher"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--activities", type=float, default=None,
                        help="a partial session: this share of the activities, drawn per worker and seed; rows score "
                             "the shown and the other activities apart")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/bench_adapt.py", *sys.argv[1:]])
    variants = parse_variants(args.variants, args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "rows.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["fold"], r["seed"], r["subject"], r["minutes"], r["variant"], r["source"]) for r in rows}
    tasks = [(unit, subject, variants, args.minutes, args.sources, args.activities, done)
             for run in args.runs for unit in sorted((run / "models").iterdir())
             for subject in load_bundle(unit / STUDENT).provenance["test_subjects"]]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(args.jobs) as pool, log.open("a") as sink:
        for new in pool.map(unit_rows, tasks):
            for row in new:
                sink.write(json.dumps(row) + "\n")
            sink.flush()
            rows += new
    plot_budget(rows, args.out / "budget.png")
    with atomic_output(args.out / "screen.md") as tmp:
        tmp.write_text(summary(rows, command, args.out))
    print(summary(rows, command, args.out))


STUDENT = "student-cnn_student-none.pt"

if __name__ == "__main__":
    main()
