"""Representation KD (TSAK's Attn-Rep, Causal-Rep and Combi-Rep strategies, FitNets-style with a connector)."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.base import Distiller, register_distiller, rep_dim
from harkd.models.base import ModelOutput


@register_distiller("attn_rep", family="tsak", teacher_rep="attn")
@register_distiller("causal_rep", family="tsak", teacher_rep="causal")
@register_distiller("combi_rep", family="tsak", teacher_rep="combi")
class RepKD(Distiller):
    """Squared distance of L2-normalised connector(student rep) and the teacher rep the name gives (2 - 2 cos).

    A linear connector maps the student's rep onto the teacher rep's size; the loss is the squared distance of the
    two L2-normalised vectors (= 2 - 2 cos), summed over features and averaged over the batch.

    Normalised so that one weight suits all three teacher reps, whose scales differ (LayerNorm output, LSTM state,
    ReLU features), and so that the connector cannot shrink the loss by shrinking its output.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 teacher_rep: str, student_rep: str = "feat", weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        self.teacher_rep, self.student_rep, self.weight = teacher_rep, student_rep, float(weight)
        self.connector = nn.Linear(rep_dim(student_dims, student_rep, "student"),
                                   rep_dim(teacher_dims, teacher_rep, "teacher"))

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        projected = F.normalize(self.connector(student_out.reps[self.student_rep]), dim=1)
        target = F.normalize(teacher_out.reps[self.teacher_rep].detach(), dim=1)
        loss = (projected - target).pow(2).sum(1).mean()
        return {f"loss_{self.teacher_rep}_rep": self.weight * loss}
