"""Relational KD (Park et al. 2019): match pairwise distances and triplet angles between samples' reps."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, register_distiller, rep_dim
from harkd.models.base import ModelOutput


def pairwise_distances(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, D) -> (B, B) Euclidean distances, zero diagonal; clamped at eps so sqrt has a gradient (as the reference)."""
    squared = features.pow(2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * features @ features.t()).clamp(min=eps).sqrt()
    return distances * (1 - torch.eye(len(features), device=features.device, dtype=features.dtype))


def normalised_distances(features: torch.Tensor) -> torch.Tensor:
    """Pairwise distances divided by their mean over the pairs of distinct samples (the positive distances, as
    pairwise_distances clamps them); all zero for a batch of one, which has no pair (the reference's mean over no
    distances is NaN there). Without indexing by a mask, so no host sync on an accelerator."""
    distances = pairwise_distances(features)
    mean = distances.sum() / max(len(features) * (len(features) - 1), 1)
    return distances / mean.clamp_min(torch.finfo(distances.dtype).tiny)


def angles(features: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, B): [i, j, k] = cos of the angle at sample i between samples j and k (0 if two coincide)."""
    differences = F.normalize(features[None, :, :] - features[:, None, :], dim=2)
    return differences @ differences.transpose(1, 2)


@register_distiller("rkd", family="zoo")
class RelationalKD(Distiller):
    """Relational KD: Smooth-L1 between student and teacher normalised pairwise distances and triplet angles.

    Reads reps[student_rep] and reps[teacher_rep] (the paper's embeddings, our pooled features). Ours for 1D signals:
    nothing signal-specific; relations are B x B (x B), so rep sizes may differ and no connector is needed. Two
    terms, loss_rkd_distance (w_d=25) and loss_rkd_angle (w_a=50), the paper's weights.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_rep: str = "feat", teacher_rep: str = "combi", distance_weight: float = 25.0,
                 angle_weight: float = 50.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        rep_dim(student_dims, student_rep, "student")  # checks the names now, not at the first batch
        rep_dim(teacher_dims, teacher_rep, "teacher")
        self.student_rep, self.teacher_rep = student_rep, teacher_rep
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        student = student_out.reps[self.student_rep].flatten(1)
        teacher = teacher_out.reps[self.teacher_rep].detach().flatten(1)
        distance = F.smooth_l1_loss(normalised_distances(student), normalised_distances(teacher))
        angle = F.smooth_l1_loss(angles(student), angles(teacher))
        return {"loss_rkd_distance": self.distance_weight * distance, "loss_rkd_angle": self.angle_weight * angle}
