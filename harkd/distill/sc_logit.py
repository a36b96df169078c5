"""SC-Logit KD (TSAK): Hinton KD towards the stage-2 semantic classifier's logits instead of the teacher's own."""

from __future__ import annotations

import torch

from harkd.distill.base import register_distiller
from harkd.distill.logit import LogitKD
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


@register_distiller("sc_logit", family="tsak")
class SCLogitKD(LogitKD):
    """Hinton KD towards teacher_out.head_logits["semantic"] (a TwoStageTeacher's output)."""

    term = "loss_sc_logit"

    def target_logits(self, teacher_out: ModelOutput) -> torch.Tensor:
        if "semantic" not in teacher_out.head_logits:
            raise HarkdError("sc_logit KD needs the semantic classifier's logits (head_logits['semantic']): train "
                             "TSAK stage 2 and distil from TwoStageTeacher(teacher, semantic_classifier)")
        return teacher_out.head_logits["semantic"]
