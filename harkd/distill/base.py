"""The distiller interface and registry: each KD strategy is a module returning named, already weighted losses."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harkd.errors import HarkdError
from harkd.registry import Registry
from harkd.models.base import ModelOutput

# The arguments constructors receive from build_distiller; the rest is the strategy's config. The *_maps ones (the
# models' map_dims) only go to strategies whose constructor names them.
_COMMON_ARGS = ("student_dims", "teacher_dims", "n_classes", "student_maps", "teacher_maps")


class Distiller(nn.Module):
    """One KD strategy. forward returns {"loss_ce": ce_weight * CE(student, labels), <its KD terms>}, every term
    already weighted, so the training step minimises the plain sum of the values and logs each by name.

    Strategies detach every teacher tensor they read, so a KD loss never asks the teacher for gradients. Learned
    connectors are this module's parameters: the optimiser must include distiller.parameters(), the exported student
    excludes them.
    """

    def __init__(self, ce_weight: float = 1.0):
        super().__init__()
        self.ce_weight = float(ce_weight)

    def forward(self, student_out: ModelOutput, teacher_out: ModelOutput | None,
                targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Label -1 marks an unlabelled window (calibration data): CE skips it, and KD terms that read the label
        see the teacher's prediction there instead. Targets may also be class probabilities (N, n_classes), e.g.
        mixup's mixed labels; an all-zero row is unlabelled, and KD terms see each row's most probable class."""
        if targets.dim() == 2:
            labelled = targets.sum(1) > 0
            ce = -(targets * F.log_softmax(student_out.logits, 1)).sum() / labelled.sum().clamp(min=1)
            targets = torch.where(labelled, targets.argmax(1), teacher_out.logits.argmax(1))
        elif bool((labelled := targets >= 0).all()):
            ce = F.cross_entropy(student_out.logits, targets)
        else:
            ce = F.cross_entropy(student_out.logits[labelled], targets[labelled]) if bool(labelled.any()) \
                else student_out.logits.sum() * 0.0
            targets = torch.where(labelled, targets, teacher_out.logits.argmax(1))
        return {"loss_ce": self.ce_weight * ce, **self.kd_terms(student_out, teacher_out, targets)}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the training loop (harkd.train.engine.fit) before epoch `epoch` (0-based) of `epochs`, for
        strategies whose loss depends on where training is (smld_stage's stagewise schedule). A no-op here: most
        strategies compute the same loss in every epoch."""

    def kd_terms(self, student_out: ModelOutput, teacher_out: ModelOutput | None,
                 targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The strategy's weighted KD losses, named loss_<what>; `targets` are the labels (for strategies that treat
        the true class apart, e.g. DKD or conditional smoothing)."""
        raise NotImplementedError


def rep_dim(dims: Mapping[str, int], name: str, whose: str) -> int:
    """The size of representation `name`, or an error naming the representations the model has."""
    if name not in dims:
        raise HarkdError(f"the {whose} has no representation {name!r}; it has: {sorted(dims)}")
    return dims[name]


def map_dim(dims: Mapping[str, int], name: str, whose: str) -> int:
    """The channel count of feature map `name`, or an error naming the feature maps the model has."""
    if name not in dims:
        raise HarkdError(f"the {whose} has no feature map {name!r}; it has: {sorted(dims)}")
    return dims[name]


def match_length(feature_map: torch.Tensor, length: int) -> torch.Tensor:
    """A (B, C, T) map resampled linearly to `length` time steps (unchanged when T already matches), so strategies
    can compare student and teacher maps of different time resolutions."""
    if feature_map.shape[-1] == length:
        return feature_map
    return F.interpolate(feature_map, size=length, mode="linear", align_corners=False)


# What a strategy descends from, so reports can compare families (does the best TSAK strategy beat the best zoo one?).
# A fixed list catches a typo at import rather than a family of one in every report; add new families here.
FAMILIES = ("none", "tsak", "zoo", "smldist")


@dataclass(frozen=True)
class Strategy:
    """A registry entry: the class, the constructor arguments its name fixes, and its family (one of FAMILIES)."""

    cls: type[Distiller]
    bound: dict[str, Any]
    family: str


_STRATEGIES: Registry[Strategy] = Registry("KD strategy", "strategies", package="harkd.distill",
                                           group="harkd.strategies")


def register_distiller(name: str, *, family: str = "", **bound: Any) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator: makes `name` resolvable; `family` (one of FAMILIES) is required; `bound` fixes constructor
    arguments for this name (so one class can serve several strategies) and hides them from the user's config."""
    if family not in FAMILIES:
        # Checked at import, so a new strategy cannot be listed without the family its results are grouped by.
        raise ValueError(f"KD strategy {name!r}: " + (f"unknown family {family!r}" if family else "no family given")
                         + f"; register it with family= one of {', '.join(FAMILIES)}")

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        _STRATEGIES.add(name, Strategy(cls, bound, family))
        return cls

    return decorate


def distiller_names() -> list[str]:
    return _STRATEGIES.names()


def distiller_defaults(name: str) -> dict[str, Any]:
    """The config keys of strategy `name` with their default values."""
    strategy = _STRATEGIES.get(name)
    params = inspect.signature(strategy.cls).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON_ARGS and k not in strategy.bound}


def distiller_family(name: str) -> str:
    """The family strategy `name` was registered with (one of FAMILIES)."""
    return _STRATEGIES.get(name).family


def distiller_summary(name: str) -> str:
    """The first line of the strategy's docstring, for listings."""
    return (_STRATEGIES.get(name).cls.__doc__ or "").strip().splitlines()[0]


def build_distiller(name: str, student_dims: Mapping[str, int], teacher_dims: Mapping[str, int], n_classes: int,
                    student_maps: Mapping[str, int] | None = None, teacher_maps: Mapping[str, int] | None = None,
                    **config: Any) -> Distiller:
    """Build strategy `name` for a student/teacher pair given their rep_dims (and map_dims, for map-based
    strategies); unknown config keys are errors."""
    strategy = _STRATEGIES.get(name)
    valid = distiller_defaults(name)
    unknown = set(config) - set(valid)
    if unknown:
        raise HarkdError(f"KD strategy {name}: unknown option(s) {sorted(unknown)}; "
                         f"valid options: {sorted(valid) or 'none'}")
    params = inspect.signature(strategy.cls).parameters
    maps = {key: dict(value or {}) for key, value in (("student_maps", student_maps), ("teacher_maps", teacher_maps))
            if key in params}
    return strategy.cls(student_dims=dict(student_dims), teacher_dims=dict(teacher_dims), n_classes=n_classes,
                        **maps, **strategy.bound, **config)
