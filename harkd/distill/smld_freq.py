"""Frequency-aware map distillation (ours, for SMLDist's frequency features): log-magnitude spectra over time."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from harkd.distill.base import Distiller, register_distiller
from harkd.distill.smld_stage import StageAligner
from harkd.errors import HarkdError
from harkd.models.base import ModelOutput


def log_magnitudes(feature_map: torch.Tensor) -> torch.Tensor:
    """log1p of the rFFT magnitudes along time without the DC bin, (B, C, T // 2); norm "forward" makes a
    sinusoid's magnitude its amplitude / 2 whatever T."""
    return torch.log1p(torch.fft.rfft(feature_map, dim=-1, norm="forward").abs()[..., 1:])


def band_weights(teacher_map: torch.Tensor) -> torch.Tensor:
    """Per frequency bin, the teacher's share of the batch's spectral energy (mean over batch and channels,
    normalised to sum 1; uniform when the teacher's maps are constant in time)."""
    energy = torch.fft.rfft(teacher_map, dim=-1, norm="forward").abs()[..., 1:].pow(2).mean((0, 1))
    total = energy.sum()
    return torch.where(total > 0, energy / total.clamp_min(torch.finfo(energy.dtype).tiny),
                       torch.full_like(energy, 1.0 / energy.numel()))


@register_distiller("smld_freq", family="smldist")
class FrequencyKD(Distiller):
    """Frequency-aware map KD: energy-weighted mean squared difference of log1p rFFT magnitudes over time (no DC).

    Student maps are connected to the teacher's channels and resampled to its length (as in smld_stage). Magnitude
    spectra ignore phase, so circular time shifts of either map leave the loss unchanged; DC is left out because the
    time mean is what the stage and logit terms already match, this term is about temporal rhythm.
    """

    def __init__(self, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                 student_maps: Mapping[str, int], teacher_maps: Mapping[str, int],
                 student_stages: Sequence[str] | None = None, teacher_stages: Sequence[str] | None = None,
                 weight: float = 1.0, ce_weight: float = 1.0):
        super().__init__(ce_weight)
        self.align = StageAligner(student_maps, teacher_maps, student_stages, teacher_stages, "smld_freq")
        self.weight = float(weight)

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = []
        for student, teacher in self.align(student_out, teacher_out):
            if teacher.shape[-1] < 2:
                raise HarkdError("smld_freq: a teacher map has one time step, so no frequency but DC; pick maps "
                                 "with at least 2 steps (student_stages / teacher_stages)")
            squared = (log_magnitudes(student) - log_magnitudes(teacher)).pow(2).mean((0, 1))
            losses.append((band_weights(teacher) * squared).sum())
        return {"loss_freq": self.weight * sum(losses) / len(losses)}
