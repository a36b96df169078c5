"""Similarity-preserving KD (Tung & Mori 2019): match the batch's pairwise similarity structure."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from harkd.distill.base import Distiller, map_dim, register_distiller, rep_dim
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def similarity(features: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, B): the Gram matrix of the flattened samples, each row L2-normalised."""
    flat = features.flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


@register_distiller("sp", family="zoo")
class SimilarityPreservingKD(Distiller):
    """Similarity-preserving KD: squared Frobenius distance of row-normalised batch Gram matrices, divided by B^2.

    Reads maps[student_map] and maps[teacher_map] (flattened over channels and time, as the paper flattens the last
    block's activation maps) or, with on="reps", reps[student_rep] and reps[teacher_rep]. Ours for 1D signals:
    nothing beyond flattening (C, T) instead of (C, H, W); Gram matrices are B x B, so no connector and no time
    resampling are needed. Weight 3000 is the paper's.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int], on: str = "maps",
                 student_map: str = "feat", teacher_map: str = "encoder", student_rep: str = "feat",
                 teacher_rep: str = "combi", weight: float = 3000.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        if on == "maps":
            map_dim(student_maps, student_map, "student")  # checks the names now, not at the first batch
            map_dim(teacher_maps, teacher_map, "teacher")
            self.student, self.teacher = student_map, teacher_map
        elif on == "reps":
            rep_dim(student_dims, student_rep, "student")
            rep_dim(teacher_dims, teacher_rep, "teacher")
            self.student, self.teacher = student_rep, teacher_rep
        else:
            raise HarkdError(f"sp: on must be 'maps' or 'reps', got {on!r}")
        self.on, self.weight = on, float(weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        student = getattr(student_out, self.on)[self.student]
        teacher = getattr(teacher_out, self.on)[self.teacher].detach()
        batch = student.shape[0]
        loss = (similarity(student) - similarity(teacher)).pow(2).sum() / batch ** 2
        return {"loss_sp": self.weight * loss}
