"""No distillation: the student trained on labels alone (the baseline every KD result is compared with)."""

from __future__ import annotations

from typing import Mapping

import torch

from harkd.distill.base import Distiller, register_distiller
from harkd.models.base import ModelOutput


@register_distiller("none", family="none")
class NoKD(Distiller):
    """Cross-entropy on labels only; the teacher output is ignored (may be None)."""

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 ce_weight: float = 1.0):
        super().__init__(ce_weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput | None,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}
