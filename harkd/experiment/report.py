"""Render an experiment's results (the results.json dict) as report.md with PNG figures beside it.

Scores are shown in percent; Δ vs a baseline in percentage points; a mean over a single run without "± std".
Figures are drawn by harkd.experiment.figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from harkd.experiment.families import UNKNOWN, best_per_family, tsak_vs_zoo_sentence
from harkd.experiment.figures import (CostPoint, confusion_png, cost_png, macro_f1_bars, paired_deltas_png,
                                      personalised_folds_png)
from harkd.experiment.rows import PERSONALISED_LABELS, ResultRow, rows_of
from harkd.experiment.summary import (BASELINE, BASELINES, TEACHER_METHOD, MethodSummary, fold_deltas, fold_means,
                                      ratios, summarise)
from harkd.files import atomic_output

_SUMMARY_HEADER = ["role", "model", "method", "n", "macro-F1 (%)", "accuracy (%)", "Δ vs baseline (pp)",
                   "folds won", "params", "FLOPs (M)", "latency (ms)"]
_SUMMARY_RIGHT = [False, False, False, True, True, True, True, True, True, True, True]
_LABELS = dict(zip(PERSONALISED_LABELS, ["none (the kept student, not fine-tuned)", "its own (self-training, lower "
                                          "bound)", "the teacher's", "the teacher's, guarded (ours: what ships)",
                                          "the worker's true labels (upper bound, reported only)"]))
_PERSONALISED_BASELINE = BASELINES["personalised"]


def _mean_std(mean: float, std: float, n: int) -> str:
    """Mean ± std in percent; the mean alone for a single run, whose std says nothing."""
    return f"{100 * mean:.2f}" if n == 1 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _delta(delta: float | None) -> str:
    return "" if delta is None else f"{100 * delta:+.2f}"


def _won(won: int | None, total: int | None) -> str:
    return "" if won is None else f"{won}/{total}"


def _summary_cells(summary: Sequence[MethodSummary]) -> list[list[str]]:
    return [[s.role, s.model, s.name, str(s.n), _mean_std(s.macro_f1_mean, s.macro_f1_std, s.n),
             _mean_std(s.accuracy_mean, s.accuracy_std, s.n), _delta(s.delta_vs_none_mean),
             _won(s.folds_won, s.folds_total), f"{s.params:,}", f"{s.flops / 1e6:.3f}", f"{s.latency_ms_cpu:.3f}"]
            for s in summary]


def _text_table(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    widths = [max(map(len, column)) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown_table(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    rule = ["---:" if r else ":---" for r in right]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def format_summary_table(summary: Sequence[MethodSummary]) -> str:
    """The `summarise` output as an aligned plain-text table (for the terminal)."""
    return _text_table(_SUMMARY_HEADER, _summary_cells(summary), _SUMMARY_RIGHT)


def _ratio_table(rows: Sequence[ResultRow]) -> str:
    cells = [[r.model, r.teacher, f"{100 * r.params_reduction:.1f}", f"{100 * r.flops_reduction:.1f}",
              f"{r.speedup:.2f}"] for r in ratios(rows)]
    return _markdown_table(["student", "teacher", "params reduction (%)", "FLOPs reduction (%)", "speed-up (×)"],
                           cells, [False, False, True, True, True])


def _fold_table(rows: Sequence[ResultRow]) -> str:
    table = fold_means(rows)
    cells = [[str(fold), *("" if np.isnan(v) else f"{100 * v:.2f}" for v in values)]
             for fold, values in zip(table.index, table.to_numpy())]
    return _markdown_table(["fold", *("/".join(column) for column in table.columns)], cells,
                           [False] + [True] * len(table.columns))


def _family_section(results: Mapping[str, Any], summary: Sequence[MethodSummary]) -> list[str]:
    """The "Best method per family" section: per student, each family's best method and the TSAK-vs-zoo
    sentence; nothing when no student has a KD method of a known family."""
    found = best_per_family(results.get("config"), summary)
    if not found["best"]:
        return []
    cells = [[b["model"], b["family"], b["method"], str(b["n"]),
              _mean_std(b["macro_f1_mean"], b["macro_f1_std"], b["n"]), _delta(b["delta_vs_none_mean"]),
              _won(b["folds_won"], b["folds_total"])] for b in found["best"]]
    parts = ["## Best method per family",
             "Per student, the KD method with the highest mean macro-F1 in each family, with its numbers from the "
             "summary. Families come from the methods' terms in the config: tsak (TSAK's strategies), zoo "
             "(established KD methods, Hinton's logit KD included), smldist (SMLDist's), self (`teacher: self`, no "
             "teacher), mixed (terms from several families).",
             _markdown_table(["student", "family", "method", "n", "macro-F1 (%)", "Δ vs none (pp)", "folds won"],
                             cells, [False, False, False, True, True, True, True])]
    parts += [tsak_vs_zoo_sentence(entry) for entry in found["tsak_vs_zoo"]]
    unknown = [f"{model}/{method}" for model, methods in found["families"].items()
               for method, family in methods.items() if family == UNKNOWN]
    if unknown:  # older or hand-made results whose config does not define these methods
        parts.append(f"Not placed in a family (not defined by a parseable config method): {', '.join(unknown)}.")
    return parts


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(p for p in parts if p != "-"))


def _best(summary: Sequence[MethodSummary], role: str, model: str, keep) -> list[MethodSummary]:
    """The model's summary entry with the highest mean macro-F1 among those `keep` accepts; none if none is."""
    candidates = [s for s in summary if s.role == role and s.model == model and keep(s.name)]
    return [max(candidates, key=lambda s: s.macro_f1_mean)] if candidates else []


def _models(summary: Sequence[MethodSummary], role: str) -> list[str]:
    """The models of a role in summary order; for personalised rows, the students (not the teacher)."""
    return list(dict.fromkeys(s.model for s in summary if s.role == role and s.name != TEACHER_METHOD))


def _showcase(summary: Sequence[MethodSummary]) -> list[MethodSummary]:
    """What the figures single out: each teacher and semantic classifier; per student model its "none" and its
    best KD method; per personalised student its best with the teacher's labels, and the teacher on those
    windows."""
    chosen = [s for s in summary if s.role in ("teacher", "semantic")]
    for model in _models(summary, "student"):
        chosen += _best(summary, "student", model, lambda m: m == BASELINE)
        chosen += _best(summary, "student", model, lambda m: m != BASELINE)
    for model in _models(summary, "personalised"):
        chosen += _best(summary, "personalised", model, lambda m: m.endswith("+teacher"))
    return chosen + [s for s in summary if s.role == "personalised" and s.name == TEACHER_METHOD]


def _confusion_targets(summary: Sequence[MethodSummary]) -> list[tuple[str, str, str]]:
    """Each teacher, per student model its "none" and its best method by mean macro-F1, per personalised student
    its best with the teacher's labels."""
    return [(s.role, s.model, s.name) for s in _showcase(summary)
            if s.role == "teacher" or s.name != TEACHER_METHOD]


def _setup_lines(results: Mapping[str, Any]) -> list[str]:
    rows = rows_of(results["rows"])
    folds = list(dict.fromkeys(r.fold for r in rows))
    seeds = sorted({r.seed for r in rows})
    lines = [f"- command: `{results['command']}`",
             f"- started {results['started']}, wall time {timedelta(seconds=round(results['wall_time_s']))}, "
             f"machine: {results['machine']}, harkd {results['harkd_version']}",
             f"- {len(folds)} fold(s): {', '.join(folds)}; seed(s): {', '.join(map(str, seeds))}"]
    models = {(r.role, r.model): r for r in rows if r.role != "personalised"}  # the same models again
    lines += [f"- {role} `{model}`: {r.n_channels} channels (`{r.channels}`)"
              for (role, model), r in models.items()]
    methods = list(dict.fromkeys(r.name for r in rows if r.role == "student"))
    if methods:
        lines.append(f"- KD methods: {', '.join(methods)}")
    if "shared_runs" in results:  # a comparison of several runs (harkd compare)
        shared = results["shared_runs"]
        lines += [f"- merged from: {', '.join(run['source'] for run in results['config']['runs'])} (wall time is "
                  f"their sum)",
                  f"- {shared['count']} run(s) present in several inputs were taken from the first; their macro-F1 "
                  f"differed by at most {100 * shared['max_abs_macro_f1_difference']:.2f} points"]
    return lines


def _confusion_section(results: Mapping[str, Any], summary: Sequence[MethodSummary], out_dir: Path) -> list[str]:
    """The confusion matrices of the teacher, the student alone and the best students, drawn into `out_dir`."""
    confusion, class_names = results["confusion"], results["class_names"]
    images = []
    for role, model, method in _confusion_targets(summary):
        key = f"{role}/{model}/{method}"
        if key in confusion:
            name = f"confusion_{_slug(role, model, method)}.png"
            title = f"{role} {model}" + ("" if method == "-" else f" / {method}")
            confusion_png(confusion[key], class_names, title, out_dir / name)
            images.append(f"![confusion matrix, {title}]({name})")
    if not images:
        return []
    return ["## Confusion matrices", "Rows: true class, normalised to 1; numbers in %; summed over folds and seeds.",
            *images]


def _personalised_cells(s: MethodSummary) -> list[str]:
    is_teacher = s.name == TEACHER_METHOD
    of_teacher = "" if s.of_teacher is None else f"{100 * s.of_teacher:.1f}"
    return [f"teacher `{s.model}`" if is_teacher else s.name,
            "" if is_teacher else _LABELS.get(s.labels, "?"), str(s.n), _mean_std(s.macro_f1_mean, s.macro_f1_std, s.n),
            _delta(s.delta_vs_none_mean), _won(s.folds_won, s.folds_total), of_teacher]


def _personalised_sentence(entries: Sequence[MethodSummary]) -> list[str]:
    """Where the teacher's labels took the student, and how far the true labels would."""
    sentences = []
    for labels, what in (("teacher", "Best with the teacher's labels"), ("guarded", "Guarded (what ships)"),
                         ("true", "Upper bound (true labels)")):
        found = [s for s in entries if s.labels == labels and s.of_teacher is not None]
        if found:
            best = max(found, key=lambda s: s.macro_f1_mean)
            won = "" if best.folds_won is None else f", won {_won(best.folds_won, best.folds_total)} folds"
            sentences.append(f"{what}: {best.name}, {100 * best.macro_f1_mean:.2f} macro-F1, "
                             f"{100 * best.of_teacher:.1f}% of the teacher on the same windows, "
                             f"{_delta(best.delta_vs_none_mean)} "
                             f"points over `{_PERSONALISED_BASELINE}`{won}.")
    return [" ".join(sentences)] if sentences else []


def _personalised_panels(rows: Sequence[ResultRow], entries: Mapping[str, list]) -> dict:
    """Per personalised student model, macro-F1 per fold (mean over seeds) of its table's rows, named as there."""
    table = fold_means(rows)
    return {model: pd.DataFrame({_personalised_cells(s)[0].replace("`", ""): table[("personalised", s.model, s.name)]
                                 for s in model_entries})
            for model, model_entries in entries.items()}


def _personalised_section(rows: Sequence[ResultRow], summary: Sequence[MethodSummary],
                          out_dir: Path) -> list[str]:
    """Per personalised student model: its variants and bounds beside the teacher on the same windows, as a table,
    a sentence and a per-fold figure; nothing when no row is personalised."""
    personalised = [s for s in summary if s.role == "personalised"]
    teachers = [s for s in personalised if s.name == TEACHER_METHOD]
    entries = {model: [s for s in personalised if s.model == model] + teachers
               for model in _models(summary, "personalised")}
    if not entries:
        return []
    parts = ["## Personalised to the new worker",
             "After each fold, each kept student is fine-tuned on a calibration session of the left-out worker, "
             "labelled as the second column says, and scored with the teacher on the same windows (the second half "
             "of that worker's recordings, not the plain test windows above). Δ and folds won: against "
             f"`{_PERSONALISED_BASELINE}`, paired by fold and seed. % of teacher: the student's macro-F1 over the "
             "teacher's on the same run, averaged over runs."]
    header = ["method", "labels", "n", "macro-F1 (%)", f"Δ vs {_PERSONALISED_BASELINE} (pp)", "folds won",
              "% of teacher"]
    for model, model_entries in entries.items():
        parts += [f"### {model}", _markdown_table(header, list(map(_personalised_cells, model_entries)),
                                                  [False, False, True, True, True, True, True]),
                  *_personalised_sentence(model_entries)]
    personalised_folds_png(_personalised_panels(rows, entries), out_dir / "personalised.png")
    return parts + ["![personalised students and the teacher per fold](personalised.png)"]


def _delta_section(rows: Sequence[ResultRow], summary: Sequence[MethodSummary],
                   out_dir: Path) -> list[str]:
    """The paired Δ figure: per method its gain over its baseline fold by fold; nothing without a paired method."""
    deltas = fold_deltas(rows)
    if not deltas:
        return []
    paired_deltas_png(deltas, summary, out_dir / "paired_delta.png")
    return ["## Did KD help? Gains paired by fold",
            "Each method's macro-F1 minus its baseline's (the same student alone; for personalised students, "
            f"`{_PERSONALISED_BASELINE}`) on the same fold and seed. Workers differ far more from each other than "
            "methods do, so the ± of the table can hide a gain that these paired differences show: dots right of "
            "zero on most folds mean the method helped.",
            "![macro-F1 gain over the baseline per fold](paired_delta.png)"]


def _cost_label(s: MethodSummary, teacher_flops: float | None) -> str:
    """The point's name and score, and for all but teachers its FLOPs against the reference teacher's."""
    is_teacher = s.name == TEACHER_METHOD and s.role != "semantic"
    label = f"{s.role} {s.model}" + ("" if s.name == TEACHER_METHOD else f" / {s.name}")
    label += " on the personalised windows" if is_teacher and s.role == "personalised" else ""
    label += f": {100 * s.macro_f1_mean:.1f}%"
    if teacher_flops and not is_teacher:
        ratio = teacher_flops / s.flops
        label += f", {ratio:.0f}× fewer FLOPs" if ratio >= 2 else f", {1 / ratio:.2f}× the teacher's FLOPs"
    return label


def _cost_section(summary: Sequence[MethodSummary], out_dir: Path) -> list[str]:
    """Macro-F1 against FLOPs for the teacher, the semantic classifier, the students and personalised students."""
    chosen = [s for s in _showcase(summary) if s.flops > 0]  # a log axis cannot place zero
    if not chosen:
        return []
    teachers = [s for s in summary if s.role == "teacher"]
    reference = max(teachers, key=lambda s: s.macro_f1_mean) if teachers else None  # the one worth distilling
    points = [CostPoint(s.role, s.flops, s.macro_f1_mean, _cost_label(s, reference.flops if reference else None))
              for s in chosen]
    cost_png(points, out_dir / "f1_vs_cost.png")
    ratio = f" FLOPs ratios are against the most accurate teacher, `{reference.model}`." if reference else ""
    return ["## Macro-F1 against cost",
            "FLOPs per window against mean macro-F1: the teacher, the semantic classifier, each student alone and "
            "with its best KD method, and each personalised student with its best teacher-label method. Personalised "
            "rows are scored on other windows (the left-out worker's later recordings) than the rest; compare them "
            f"with the teacher on those windows.{ratio}", "![macro-F1 against FLOPs](f1_vs_cost.png)"]


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write out_dir/report.md and its PNG figures; return the report's path.

    Figures are written first and report.md last, each through a temp file and os.replace, so a crash leaves the
    previous report (or none) rather than a truncated one, and the report never links a missing image.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = rows_of(results["rows"])
    summary = summarise(rows)
    datasets = ", ".join(dict.fromkeys(r.dataset for r in rows)) or "no runs"

    parts = [f"# Knowledge distillation on {datasets}", "\n".join(_setup_lines(results)),
             "<details><summary>Configuration</summary>\n\n```json\n"
             f"{json.dumps(results['config'], indent=2, default=str)}\n```\n\n</details>",
             "## Summary",
             "Mean ± sample std over runs (folds × seeds); the mean alone for a single run. Δ vs baseline: mean "
             "difference in macro-F1 to the same student trained without KD (`none`), paired by fold and seed; for "
             f"personalised students, to `{_PERSONALISED_BASELINE}`. Folds won: folds where the method's mean over "
             "seeds beats the baseline's. Params, FLOPs (per window) and batch-1 CPU latency: medians over runs.",
             _markdown_table(_SUMMARY_HEADER, _summary_cells(summary), _SUMMARY_RIGHT),
             *_delta_section(rows, summary, out_dir),
             *_personalised_section(rows, summary, out_dir),
             *_cost_section(summary, out_dir),
             *_family_section(results, summary),
             "## Students vs teacher", _ratio_table(rows),
             "## Macro-F1 (%) per fold, mean over seeds", _fold_table(rows)]

    if macro_f1_bars(summary, out_dir / "macro_f1.png"):
        parts += ["## Macro-F1 per method", "![macro-F1 per method](macro_f1.png)"]
    parts += _confusion_section(results, summary, out_dir)
    path = out_dir / "report.md"
    with atomic_output(path) as tmp:
        tmp.write_text("\n\n".join(parts) + "\n")
    return path


def write_results(results: Mapping[str, Any], out_dir: Path) -> None:
    """out_dir/results.json and the report: they appear together or not at all."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        (staging / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        write_report(results, staging)
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
