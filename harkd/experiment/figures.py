"""The report's figures, drawn on matplotlib's Agg canvas directly so that writing a report never touches the pyplot
state or backend of the calling process. Each takes what report.py computed and draws it; scores in percent."""

from __future__ import annotations

import io
from pathlib import Path
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harkd.experiment.summary import BASELINE, MethodSummary
from harkd.files import atomic_output

ANNOTATE_MAX_CLASSES = 20  # beyond this the cell numbers no longer fit; the colours still read
ROLE_MARKERS = {"teacher": "s", "semantic": "D", "student": "o", "personalised": "^"}


def save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def macro_f1_bars(summary: Sequence[MethodSummary], path: Path) -> bool:
    """Macro-F1 per method, one panel per student model, with the teacher and semantic classifier as reference
    lines. False when there are no students to draw."""
    students = [s for s in summary if s.role == "student"]
    models = list(dict.fromkeys(s.model for s in students))
    if not models:
        return False
    references = [s for s in summary if s.role in ("teacher", "semantic")]
    widest = max(sum(s.model == m for s in students) for m in models)
    fig = Figure(figsize=(max(4.0, 0.6 * widest + 2) * len(models), 4.2), layout="constrained")
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models):
        bars = [s for s in students if s.model == model]
        ax.bar(range(len(bars)), [100 * s.macro_f1_mean for s in bars], yerr=[100 * s.macro_f1_std for s in bars],
               capsize=3, color=["0.6" if s.name == BASELINE else "C0" for s in bars])
        for i, ref in enumerate(references):
            ax.axhline(100 * ref.macro_f1_mean, color=f"C{i + 1}", linestyle="--", linewidth=1,
                       label=f"{ref.role} {ref.model} ({100 * ref.macro_f1_mean:.1f})")
        ax.set_xticks(range(len(bars)), [s.name for s in bars], rotation=30, ha="right")
        ax.set_title(model)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("macro-F1 (%), mean ± std over runs")
    if references:  # one legend below the panels, where it cannot cover a bar
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
    save(fig, path)
    return True


def confusion_png(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: Path) -> None:
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
    if k <= ANNOTATE_MAX_CLASSES:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=9 if k <= 10 else 7,
                    color="white" if share[i, j] > 0.5 else "black")
    save(fig, path)


def paired_deltas_png(deltas: Mapping[tuple[str, str, str], pd.Series], summary: Sequence[MethodSummary],
                      path: Path) -> None:
    """One line per method (top to bottom in summary order): its Δ vs its baseline per fold as dots (green above
    zero, red below), the mean over paired runs as a bar, and the zero line; the y label carries the mean and the
    folds won, so the figure reads without the table."""
    stats = {(s.role, s.model, s.name): s for s in summary}
    keys = list(deltas)
    fig = Figure(figsize=(8.0, 1.4 + 0.32 * len(keys)), layout="constrained")
    ax = fig.add_subplot()
    for y, key in enumerate(keys):
        points = 100 * deltas[key].to_numpy()
        ax.scatter(points, np.full(len(points), y), s=22, alpha=0.8, zorder=3,
                   c=np.where(points > 0, "tab:green", "tab:red"))
        ax.scatter([100 * stats[key].delta_vs_none_mean], [y], marker="|", s=300, color="black", zorder=4)
        if y and key[:2] != keys[y - 1][:2]:  # a rule between models, and between plain and personalised rows
            ax.axhline(y - 0.5, color="0.6", linewidth=0.8)
    ax.axvline(0, color="0.3", linewidth=1)
    ax.set_yticks(range(len(keys)), [_delta_label(stats[key]) for key in keys], fontsize=8)
    ax.set_ylim(len(keys) - 0.5, -0.5)  # first method at the top
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("Δ macro-F1 vs the same model's baseline (points)\n"
                  "dots: folds (mean over seeds); bar: mean over runs")
    save(fig, path)


def _delta_label(s: MethodSummary) -> str:
    prefix = "personalised " if s.role == "personalised" else ""
    return f"{prefix}{s.model} / {s.name}  ({100 * s.delta_vs_none_mean:+.1f}, won {s.folds_won}/{s.folds_total})"


def personalised_folds_png(panels: Mapping[str, pd.DataFrame], path: Path) -> None:
    """One panel per student model: macro-F1 per fold (x) of each of its personalised variants and of the
    teacher on the same windows (columns of the panel's frame, index = fold), joined by lines so that each
    fold's pairs read at a glance."""
    folds = max(len(frame.index) for frame in panels.values())
    fig = Figure(figsize=(max(6.0, 0.8 * folds + 3.5), 3.4 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (model, frame) in zip(axes, panels.items()):
        x = np.arange(len(frame.index))
        for i, column in enumerate(frame.columns):
            teacher = column.startswith("teacher")
            ax.plot(x, 100 * frame[column].to_numpy(), marker="s" if teacher else "o", label=column,
                    color="black" if teacher else f"C{i}", linestyle="--" if teacher else "-", linewidth=1)
        ax.set_xticks(x, list(frame.index), rotation=30, ha="right")
        ax.set(title=f"{model}, personalised to the left-out worker", ylabel="macro-F1 (%), mean over seeds")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    save(fig, path)


@dataclass(frozen=True)
class CostPoint:
    role: str
    flops: int
    macro_f1: float
    label: str  # its name, score and cost ratio, for the legend


def cost_png(points: Sequence[CostPoint], path: Path) -> None:
    """Macro-F1 against FLOPs per window (log scale), one marker per point (shape by role), each named in the
    legend with its score and cost ratio."""
    fig = Figure(figsize=(8.0, 4.0 + 0.22 * len(points)), layout="constrained")
    ax = fig.add_subplot()
    for i, point in enumerate(points):
        ax.scatter([point.flops], [100 * point.macro_f1], s=60, color=f"C{i % 10}", label=point.label,
                   marker=ROLE_MARKERS.get(point.role, "o"), edgecolor="black", linewidth=0.5, zorder=3)
    ax.set_xscale("log")
    ax.margins(x=0.1, y=0.1)
    ax.grid(alpha=0.3, which="both")
    ax.set(xlabel="FLOPs per window (log scale)", ylabel="macro-F1 (%), mean over runs")
    fig.legend(loc="outside lower center", fontsize=8, ncols=1)
    save(fig, path)
