"""Several KD strategies as one distiller: the training step still sees one dict of named, weighted terms."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from harkd.distill.base import Distiller, build_distiller
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


class CompositeKD(Distiller):
    """The KD terms of every part (their own CE weights unused) plus one CE on the labels."""

    def __init__(self, parts: Iterable[Distiller], ce_weight: float):
        super().__init__(ce_weight)
        self.parts = nn.ModuleList(parts)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        for part in self.parts:
            part.start_epoch(epoch, epochs)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for part in self.parts:
            for name, loss in part.kd_terms(student_out, teacher_out, targets).items():
                if name in terms:
                    raise HarkdError(f"two KD terms of one method are both named {name!r}; list each strategy once")
                terms[name] = loss
        return terms


def build_method(method: Any, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int],
                 n_classes: int, student_maps: Mapping[str, int] | None = None,
                 teacher_maps: Mapping[str, int] | None = None) -> Distiller | None:
    """The distiller of a method with `.name` and `.terms` (mappings {"distiller": name, **config}).

    None when there are no terms (the student alone, trained on CE). Several terms share one CE on the labels, so
    every term that sets ce_weight must set the same value (default 1.0 when none does).
    """
    terms: Sequence[Mapping[str, Any]] = method.terms
    if not terms:
        return None
    parts = [build_distiller(term["distiller"], student_dims, teacher_dims, n_classes, student_maps, teacher_maps,
                             **{k: v for k, v in term.items() if k != "distiller"}) for term in terms]
    if len(parts) == 1:
        return parts[0]
    ce_weights = {float(term["ce_weight"]) for term in terms if "ce_weight" in term}
    if len(ce_weights) > 1:
        raise HarkdError(f"method {method.name}: its terms set different ce_weight values {sorted(ce_weights)}; "
                         f"the labels' cross-entropy is counted once, so set one value")
    return CompositeKD(parts, ce_weights.pop() if ce_weights else 1.0)
