"""All TSAK strategies at once: logit, SC-Logit and the three representation terms, each with its own weight."""

from __future__ import annotations

from typing import Mapping

from harkd.distill.base import register_distiller
from harkd.distill.compose import CompositeKD
from harkd.distill.logit import LogitKD
from harkd.distill.rep import RepKD
from harkd.distill.sc_logit import SCLogitKD


@register_distiller("tsak_all", family="tsak")
class TSAKAllKD(CompositeKD):
    """The sum of the logit, sc_logit, attn_rep, causal_rep and combi_rep terms (each reported by name)."""

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 logit_weight: float = 0.9, sc_logit_weight: float = 0.9, attn_rep_weight: float = 1.0,
                 causal_rep_weight: float = 1.0, combi_rep_weight: float = 1.0, temperature: float = 4.0,
                 student_rep: str = "feat", ce_weight: float = 0.1):
        dims = (student_dims, teacher_dims, n_classes)
        super().__init__([
            LogitKD(*dims, weight=logit_weight, temperature=temperature),
            SCLogitKD(*dims, weight=sc_logit_weight, temperature=temperature),
            *(RepKD(*dims, teacher_rep=rep, student_rep=student_rep, weight=weight)
              for rep, weight in (("attn", attn_rep_weight), ("causal", causal_rep_weight),
                                  ("combi", combi_rep_weight)))], ce_weight)
