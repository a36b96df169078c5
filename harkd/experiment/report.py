"""Render an experiment's results (the results.json dict) as report.md with PNG figures beside it.

Scores are shown in percent; Δ vs none in percentage points. Figures are drawn on matplotlib's Agg canvas directly,
so writing a report never touches the pyplot state or backend of the calling process.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harkd.experiment.families import UNKNOWN, best_per_family, tsak_vs_zoo_sentence
from harkd.experiment.summary import BASELINE, fold_means, ratios, summarise
from harkd.files import atomic_output

_SUMMARY_HEADER = ["role", "model", "method", "n", "macro-F1 (%)", "accuracy (%)", "Δ vs none (pp)", "folds won",
                   "params", "FLOPs (M)", "latency (ms)"]
_SUMMARY_RIGHT = [False, False, False, True, True, True, True, True, True, True, True]
_ANNOTATE_MAX_CLASSES = 20  # beyond this the cell numbers no longer fit; the colours still read


def _mean_std(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _summary_cells(summary: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    cells = []
    for s in summary:
        delta, won = s["delta_vs_none_mean"], s["folds_won"]
        cells.append([s["role"], s["model"], s["method"], str(s["n"]),
                      _mean_std(s["macro_f1_mean"], s["macro_f1_std"]),
                      _mean_std(s["accuracy_mean"], s["accuracy_std"]),
                      "" if delta is None else f"{100 * delta:+.2f}",
                      "" if won is None else f"{won}/{s['folds_total']}",
                      f"{s['params']:,}", f"{s['flops'] / 1e6:.3f}", f"{s['latency_ms_cpu']:.3f}"])
    return cells


def _text_table(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    widths = [max(map(len, column)) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _markdown_table(header: list[str], rows: list[list[str]], right: list[bool]) -> str:
    rule = ["---:" if r else ":---" for r in right]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, rule, *rows])


def format_summary_table(summary: Sequence[Mapping[str, Any]]) -> str:
    """The `summarise` output as an aligned plain-text table (for the terminal)."""
    return _text_table(_SUMMARY_HEADER, _summary_cells(summary), _SUMMARY_RIGHT)


def _ratio_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [[r["model"], r["teacher"], f"{100 * r['params_reduction']:.1f}", f"{100 * r['flops_reduction']:.1f}",
              f"{r['speedup']:.2f}"] for r in ratios(rows)]
    return _markdown_table(["student", "teacher", "params reduction (%)", "FLOPs reduction (%)", "speed-up (×)"],
                           cells, [False, False, True, True, True])


def _fold_table(rows: Sequence[Mapping[str, Any]]) -> str:
    table = fold_means(rows)
    cells = [[str(fold), *("" if np.isnan(v) else f"{100 * v:.2f}" for v in values)]
             for fold, values in zip(table.index, table.to_numpy())]
    return _markdown_table(["fold", *("/".join(column) for column in table.columns)], cells,
                           [False] + [True] * len(table.columns))


def _family_section(results: Mapping[str, Any], summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Best method per family" section: per student, each family's best method and the TSAK-vs-zoo
    sentence; nothing when no student has a KD method of a known family."""
    found = best_per_family(results.get("config"), summary)
    if not found["best"]:
        return []
    cells = [[b["model"], b["family"], b["method"], str(b["n"]), _mean_std(b["macro_f1_mean"], b["macro_f1_std"]),
              "" if b["delta_vs_none_mean"] is None else f"{100 * b['delta_vs_none_mean']:+.2f}",
              "" if b["folds_won"] is None else f"{b['folds_won']}/{b['folds_total']}"] for b in found["best"]]
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


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(p for p in parts if p != "-"))


def _bar_chart(summary: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Macro-F1 per method, one panel per student model, with the teacher and semantic classifier as reference
    lines. False when there are no students to draw."""
    students = [s for s in summary if s["role"] == "student"]
    models = list(dict.fromkeys(s["model"] for s in students))
    if not models:
        return False
    references = [s for s in summary if s["role"] in ("teacher", "semantic")]
    widest = max(sum(s["model"] == m for s in students) for m in models)
    fig = Figure(figsize=(max(4.0, 0.6 * widest + 2) * len(models), 4.2), layout="constrained")
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models):
        bars = [s for s in students if s["model"] == model]
        ax.bar(range(len(bars)), [100 * s["macro_f1_mean"] for s in bars],
               yerr=[100 * s["macro_f1_std"] for s in bars], capsize=3,
               color=["0.6" if s["method"] == BASELINE else "C0" for s in bars])
        for i, ref in enumerate(references):
            ax.axhline(100 * ref["macro_f1_mean"], color=f"C{i + 1}", linestyle="--", linewidth=1,
                       label=f"{ref['role']} {ref['model']} ({100 * ref['macro_f1_mean']:.1f})")
        ax.set_xticks(range(len(bars)), [s["method"] for s in bars], rotation=30, ha="right")
        ax.set_title(model)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("macro-F1 (%), mean ± std over runs")
    if references:  # one legend below the panels, where it cannot cover a bar
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    _save(fig, path)
    return True


def _confusion_png(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: Path) -> None:
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    # Row-normalised so classes of any size compare; a class absent from every test fold stays at zero.
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    k = len(class_names)
    side = 2.5 + 0.4 * k
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if k <= _ANNOTATE_MAX_CLASSES:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=9 if k <= 10 else 7,
                    color="white" if share[i, j] > 0.5 else "black")
    _save(fig, path)


def _confusion_targets(summary: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """Each teacher, then per student model its "none" and its best method by mean macro-F1."""
    targets = [(s["role"], s["model"], s["method"]) for s in summary if s["role"] == "teacher"]
    for model in dict.fromkeys(s["model"] for s in summary if s["role"] == "student"):
        kd = [s for s in summary if s["role"] == "student" and s["model"] == model and s["method"] != BASELINE]
        best = [max(kd, key=lambda s: s["macro_f1_mean"])["method"]] if kd else []
        targets += [("student", model, method) for method in [BASELINE, *best]]
    return targets


def _setup_lines(results: Mapping[str, Any]) -> list[str]:
    rows = results["rows"]
    folds = list(dict.fromkeys(r["fold"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"- command: `{results['command']}`",
             f"- started {results['started']}, wall time {timedelta(seconds=round(results['wall_time_s']))}, "
             f"machine: {results['machine']}, harkd {results['harkd_version']}",
             f"- {len(folds)} fold(s): {', '.join(folds)}; seed(s): {', '.join(map(str, seeds))}"]
    models = {(r["role"], r["model"]): r for r in rows}
    lines += [f"- {role} `{model}`: {r['n_channels']} channels (`{r['channels']}`)"
              for (role, model), r in models.items()]
    methods = list(dict.fromkeys(r["method"] for r in rows if r["role"] == "student"))
    if methods:
        lines.append(f"- KD methods: {', '.join(methods)}")
    if "shared_runs" in results:  # a comparison of several runs (harkd compare)
        shared = results["shared_runs"]
        lines += [f"- merged from: {', '.join(run['source'] for run in results['config']['runs'])} (wall time is "
                  f"their sum)",
                  f"- {shared['count']} run(s) present in several inputs were taken from the first; their macro-F1 "
                  f"differed by at most {100 * shared['max_abs_macro_f1_difference']:.2f} points"]
    return lines


def _confusion_section(results: Mapping[str, Any], summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[str]:
    """The confusion matrices of the teacher, the student alone and the best students, drawn into `out_dir`."""
    confusion, class_names = results["confusion"], results["class_names"]
    images = []
    for role, model, method in _confusion_targets(summary):
        key = f"{role}/{model}/{method}"
        if key in confusion:
            name = f"confusion_{_slug(role, model, method)}.png"
            title = f"{role} {model}" + ("" if method == "-" else f" / {method}")
            _confusion_png(confusion[key], class_names, title, out_dir / name)
            images.append(f"![confusion matrix, {title}]({name})")
    if not images:
        return []
    return ["## Confusion matrices", "Rows: true class, normalised to 1; numbers in %; summed over folds and seeds.",
            *images]


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write out_dir/report.md and its PNG figures; return the report's path.

    Figures are written first and report.md last, each through a temp file and os.replace, so a crash leaves the
    previous report (or none) rather than a truncated one, and the report never links a missing image.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results["rows"]
    summary = summarise(rows)
    datasets = ", ".join(dict.fromkeys(r["dataset"] for r in rows)) or "no runs"

    parts = [f"# Knowledge distillation on {datasets}", "\n".join(_setup_lines(results)),
             "<details><summary>Configuration</summary>\n\n```json\n"
             f"{json.dumps(results['config'], indent=2, default=str)}\n```\n\n</details>",
             "## Summary",
             "Mean ± sample std over runs (folds × seeds). Δ vs none: mean difference in macro-F1 to the same "
             "student trained without KD, paired by fold and seed. Folds won: folds where the method's mean over "
             "seeds beats the student alone. Params, FLOPs (per window) and batch-1 CPU latency: medians over runs.",
             _markdown_table(_SUMMARY_HEADER, _summary_cells(summary), _SUMMARY_RIGHT),
             *_family_section(results, summary),
             "## Students vs teacher", _ratio_table(rows),
             "## Macro-F1 (%) per fold, mean over seeds", _fold_table(rows)]

    if _bar_chart(summary, out_dir / "macro_f1.png"):
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
