"""How `harkd search-sensors` scores kits on several workers without training every kit on every one.

A kit is scored fold by fold, each fold one worker held out (the same folds in the same order for every kit, so two
kits' scores pair up). At each rung (by default after 2, then 4 folds) a kit stops when a rival wearing as many
positions at no greater cost beats it on the same folds with confidence (a one-sided paired t test): it could still
reach the front only if the folds still to come reversed a difference the folds so far call clear. A kit that stops
is scored by a subject-adjusted mean (an additive fit of kit and fold effects on every score the search holds), an
estimate of the mean it would have over every fold; a kit scored on every fold gets its plain mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class KitScores:
    """A kit's name, its costs (positions first; a rival must match the positions and cost no more in the rest) and
    its macro-F1 on each fold scored so far."""

    kit: str
    costs: tuple[int, ...]
    by_fold: Mapping[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.by_fold.values())))

    @property
    def standard_error(self) -> float | None:
        """Over folds (workers); None below two folds."""
        n = len(self.by_fold)
        return float(np.std(list(self.by_fold.values()), ddof=1) / np.sqrt(n)) if n > 1 else None

    def costs_no_more_than(self, other: "KitScores") -> bool:
        return self.costs[0] == other.costs[0] and all(a <= b for a, b in zip(self.costs[1:], other.costs[1:]))


def rung_sizes(rungs: Sequence[int], n_folds: int) -> list[int]:
    """The numbers of folds after which a kit may stop, ending with every fold."""
    return sorted({r for r in rungs if r < n_folds} | {n_folds})


def clear_margin(rival: KitScores, kit: KitScores, confidence: float) -> float | None:
    """How far the lower confidence bound of `rival` minus `kit`, paired over the kit's folds, lies above zero;
    None when the rival lacks one of them or the bound is not above zero."""
    if not set(kit.by_fold) <= set(rival.by_fold) or len(kit.by_fold) < 2:
        return None
    diff = np.array([rival.by_fold[f] - kit.by_fold[f] for f in kit.by_fold])
    n = len(diff)
    bound = diff.mean() - stats.t.ppf(confidence, n - 1) * diff.std(ddof=1) / np.sqrt(n)
    return float(bound) if bound > 0 else None


def beaten_by(kit: KitScores, rivals: Sequence[KitScores], confidence: float) -> KitScores | None:
    """The rival (as many positions, no greater cost) that beats `kit` most clearly on its folds, or None."""
    margins = [(m, r) for r in rivals if r.kit != kit.kit and r.costs_no_more_than(kit)
               for m in [clear_margin(r, kit, confidence)] if m is not None]
    return max(margins, key=lambda pair: pair[0])[1] if margins else None


def score_in_rungs(kit: KitScores, folds: Sequence[str], score: Callable[[str], float],
                   rivals: Callable[[], Sequence[KitScores]], rungs: Sequence[int], confidence: float,
                   on_score: Callable[[KitScores], None] = lambda kit: None) -> tuple[KitScores, KitScores | None]:
    """`kit` scored fold by fold (`score`), held against `rivals()` at each rung short of every fold: the kit's
    scores and the rival that stopped it (None: scored on every fold)."""
    for rung in rung_sizes(rungs, len(folds)):
        for fold in folds[len(kit.by_fold):rung]:
            kit = replace(kit, by_fold={**kit.by_fold, fold: score(fold)})
            on_score(kit)
        if rung < len(folds):
            rival = beaten_by(kit, rivals(), confidence)
            if rival is not None:
                return kit, rival
    return kit, None


def adjusted_means(kits: Sequence[KitScores]) -> dict[str, float]:
    """Each kit's estimated mean over every fold any kit was scored on: least squares on score = kit effect + fold
    effect (fold effects summing to zero), which for a kit scored on every fold is its plain mean."""
    folds = sorted({f for k in kits for f in k.by_fold})
    cells = [(i, folds.index(f), v) for i, k in enumerate(kits) for f, v in k.by_fold.items()]
    design = np.zeros((len(cells), len(kits) + len(folds) - 1))
    for row, (i, j, _) in enumerate(cells):
        design[row, i] = 1.0
        if j < len(folds) - 1:
            design[row, len(kits) + j] = 1.0
        else:  # the last fold's effect is minus the others' sum
            design[row, len(kits):] = -1.0
    solution = np.linalg.lstsq(design, np.array([v for _, _, v in cells]), rcond=None)[0]
    return {k.kit: float(solution[i]) for i, k in enumerate(kits)}


def share_beaten(member: KitScores, neighbour: KitScores) -> tuple[int, int]:
    """(folds on which `member` scores above `neighbour`, folds both were scored on)."""
    shared = [f for f in member.by_fold if f in neighbour.by_fold]
    return sum(member.by_fold[f] > neighbour.by_fold[f] for f in shared), len(shared)


__all__ = ["KitScores", "adjusted_means", "beaten_by", "clear_margin", "rung_sizes", "score_in_rungs",
           "share_beaten"]
