"""The model interface every harkd model shares: ModelOutput, HarModel and the registry of model names."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from harkd.errors import HarkdError
from harkd.registry import Registry



@dataclass
class ModelOutput:
    """What a model's forward returns.

    logits: (B, K) class scores. reps: named representations (B, D), part of the model's interface and what
    feature-based KD matches. head_logits: extra (B, K) logits of auxiliary heads (the TSAK teacher's per-rep heads,
    and "semantic" when the stage-2 classifier has been applied); empty for single-head models. maps: named
    intermediate feature maps (B, C, T') over time, what map-based KD (FitNets, attention transfer, NST, stage
    distillation) matches; their channel counts are in the model's map_dims.
    """

    logits: torch.Tensor
    reps: dict[str, torch.Tensor] = field(default_factory=dict)
    head_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)


class HarModel(nn.Module):
    """Base of the registered models: forward(x: (B, C, T) float32) -> ModelOutput; rep_dims names its reps' sizes,
    map_dims its feature maps' channel counts."""

    rep_dims: dict[str, int]
    map_dims: dict[str, int] = {}


# The arguments every constructor receives from build_model; everything else is a model's own config.
_COMMON_ARGS = ("in_channels", "n_classes", "channel_groups")
_MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "models", package="harkd.models",
                                                      group="harkd.models")


def register_model(name: str) -> Callable:
    """Class decorator: makes `name` resolvable by build_model. The constructor takes in_channels and n_classes."""
    return lambda cls: _MODELS.add(name, cls)


def model_names() -> list[str]:
    return _MODELS.names()


def model_defaults(name: str) -> dict[str, Any]:
    """A model's own config keys (beyond in_channels, n_classes, channel_groups) with their default values."""
    params = inspect.signature(_MODELS.get(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON_ARGS}


def build_model(name: str, in_channels: int, n_classes: int, channel_groups: Sequence[Sequence[int]] | None = None,
                **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name or config key is an error listing the valid ones.

    channel_groups describes the input (one list of channel indices per position/sensor token), like in_channels;
    models that do not group their input (the students) ignore it, so a runner may always pass it.
    """
    cls = _MODELS.get(name)
    valid = model_defaults(name)
    unknown = set(kwargs) - set(valid)
    if unknown:
        raise HarkdError(f"model {name}: unknown option(s) {sorted(unknown)}; valid options: {sorted(valid) or 'none'}")
    if "channel_groups" in inspect.signature(cls).parameters:
        kwargs["channel_groups"] = channel_groups
    return cls(in_channels=in_channels, n_classes=n_classes, **kwargs)
