"""Contrastive representation distillation (Tian et al. 2020) with in-batch negatives."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harkd.distill.base import Distiller, register_distiller, rep_dim
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


@register_distiller("crd", family="zoo")
class CRDKD(Distiller):
    """CRD with in-batch negatives: InfoNCE between linearly embedded, L2-normalised student and teacher reps.

    Reads reps[student_rep] and reps[teacher_rep]; two linear embeddings (distiller parameters) map both to `dim`.
    For each sample the positive is the other model's embedding of the same window and the negatives are those of
    the other B - 1 windows of the batch, in both directions (student anchors against teacher keys and the reverse,
    summed as CRD sums its two NCE terms). Ours for 1D signals: in-batch negatives instead of the paper's memory bank
    of 16384: HAR datasets hold 10^3-10^6 windows, so a bank that size would exceed the smaller ones (and revisit
    stale embeddings of few windows), and a bank needs each window's dataset index in the batch. With batches of
    64-256 that leaves 63-255 negatives. Temperature 0.07, dim 128 and weight 0.8 are the paper's.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_rep: str = "feat", teacher_rep: str = "combi", dim: int = 128, temperature: float = 0.07,
                 weight: float = 0.8, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        if temperature <= 0 or dim < 1:
            raise HarkdError(f"crd: temperature and dim must be positive, got {temperature} and {dim}")
        self.student_rep, self.teacher_rep = student_rep, teacher_rep
        self.temperature, self.weight = float(temperature), float(weight)
        self.student_embed = nn.Linear(rep_dim(student_dims, student_rep, "student"), dim)
        self.teacher_embed = nn.Linear(rep_dim(teacher_dims, teacher_rep, "teacher"), dim)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        student = F.normalize(self.student_embed(student_out.reps[self.student_rep]), dim=1)
        teacher = F.normalize(self.teacher_embed(teacher_out.reps[self.teacher_rep].detach()), dim=1)
        scores = student @ teacher.t() / self.temperature  # [i, j]: student i against teacher j
        same = torch.arange(len(scores), device=scores.device)
        loss = F.cross_entropy(scores, same) + F.cross_entropy(scores.t(), same)
        return {"loss_crd": self.weight * loss}
