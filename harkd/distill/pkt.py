"""Probabilistic knowledge transfer (Passalis & Tefas 2018): match the batch's cosine-similarity distributions."""

from __future__ import annotations

from typing import Mapping

import torch

from harkd.distill.base import Distiller, register_distiller, rep_dim
from harkd.models.base import ModelOutput


def similarity_probabilities(features: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, D) -> (B, B): cosine similarities mapped to [0, 1], each row divided by its sum."""
    unit = features / (features.norm(dim=1, keepdim=True) + eps)
    kernel = (unit @ unit.t() + 1) / 2
    return kernel / kernel.sum(1, keepdim=True)


@register_distiller("pkt", family="zoo")
class PKTKD(Distiller):
    """PKT: KL(teacher || student) between row-normalised cosine-similarity kernels of the batch's reps.

    Reads reps[student_rep] and reps[teacher_rep]. Ours for 1D signals: nothing signal-specific; the kernels are
    B x B, so rep sizes may differ. As in the reference code the KL terms p_t log((p_t + eps) / (p_s + eps)) are
    averaged over all B^2 pairs (not summed per row), which is what weight 30000 and eps 1e-7 were set for.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_rep: str = "feat", teacher_rep: str = "combi", weight: float = 30000.0, eps: float = 1e-7,
                 ce_weight: float = 1.0):
        super().__init__(ce_weight)
        rep_dim(student_dims, student_rep, "student")  # checks the names now, not at the first batch
        rep_dim(teacher_dims, teacher_rep, "teacher")
        self.student_rep, self.teacher_rep = student_rep, teacher_rep
        self.weight, self.eps = float(weight), float(eps)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        p_s = similarity_probabilities(student_out.reps[self.student_rep].flatten(1), self.eps)
        p_t = similarity_probabilities(teacher_out.reps[self.teacher_rep].detach().flatten(1), self.eps)
        loss = (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()
        return {"loss_pkt": self.weight * loss}
