"""A kept model as a program of the steps integer runtimes have kernels for: what int8 export and quantisation-aware
fine-tuning work on (harkd.deploy.int8, harkd.deploy.tflm).

Lowering folds each BatchNorm into the conv before it, fuses ReLU into its conv, drops dropout, and folds a
squeeze-excitation's hard-sigmoid into its second conv (weights / 6, bias (+ 3) / 6, output clamped to [0, 1]), so
the program is convs, depthwise convs, a time mean, dense layers, hard-swish, adds and multiplies. Its input is the
normalised window (the firmware normalises while it quantises each sample); tensors are (N, C, T) as in PyTorch.
`Program.forward` takes a `Quantiser` that sees every weight and every tensor: calibration records ranges, fake
quantisation rounds them as int8 kernels would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from harkd.errors import HarkdError

INPUT = "input"


class Quantiser(Protocol):
    def weight(self, step: "Step", weight: torch.Tensor) -> torch.Tensor: ...

    def tensor(self, name: str, value: torch.Tensor) -> torch.Tensor: ...


class Step(nn.Module):
    """One kernel call: reads named tensors, writes one."""

    op = ""

    def __init__(self, inputs: tuple[str, ...], output: str):
        super().__init__()
        self.inputs, self.output = inputs, output

    def run(self, values: list[torch.Tensor], quantiser: Quantiser | None) -> torch.Tensor:
        raise NotImplementedError


class Conv(Step):
    """Conv1d with BatchNorm folded in; `groups` = channels is a depthwise conv. `activation`: "none", "relu" or
    "clamp01" (a folded hard-sigmoid)."""

    def __init__(self, inputs, output, weight: torch.Tensor, bias: torch.Tensor, stride: int, pads: tuple[int, int],
                 groups: int, activation: str):
        super().__init__(inputs, output)
        self.weight, self.bias = nn.Parameter(weight.detach().clone()), nn.Parameter(bias.detach().clone())
        self.stride, self.pads, self.groups, self.activation = stride, pads, groups, activation
        self.op = "depthwise_conv" if groups > 1 else "conv"

    def run(self, values, quantiser):
        weight = self.weight if quantiser is None else quantiser.weight(self, self.weight)
        out = F.conv1d(F.pad(values[0], self.pads), weight, self.bias, self.stride, groups=self.groups)
        if self.activation == "relu":
            return F.relu(out)
        return out.clamp(0.0, 1.0) if self.activation == "clamp01" else out


class Dense(Step):
    """A linear layer on (N, C, 1) features."""

    op = "dense"

    def __init__(self, inputs, output, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__(inputs, output)
        self.weight, self.bias = nn.Parameter(weight.detach().clone()), nn.Parameter(bias.detach().clone())

    def run(self, values, quantiser):
        weight = self.weight if quantiser is None else quantiser.weight(self, self.weight)
        return F.linear(values[0].squeeze(-1), weight, self.bias).unsqueeze(-1)


class TimeMean(Step):
    op = "time_mean"

    def run(self, values, quantiser):
        return values[0].mean(-1, keepdim=True)


class HardSwish(Step):
    op = "hard_swish"

    def run(self, values, quantiser):
        return F.hardswish(values[0])


class Add(Step):
    op = "add"

    def run(self, values, quantiser):
        return values[0] + values[1]


class Mul(Step):
    op = "mul"

    def run(self, values, quantiser):
        return values[0] * values[1]


class Program(nn.Module):
    """The steps in order; `forward` returns every tensor by name (the input's is INPUT, the logits' the last)."""

    def __init__(self, steps: list[Step], model: str):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.model = model

    @property
    def logits(self) -> str:
        return self.steps[-1].output

    def forward(self, x: torch.Tensor, quantiser: Quantiser | None = None) -> dict[str, torch.Tensor]:
        return self.resume({INPUT: x if quantiser is None else quantiser.tensor(INPUT, x)}, 0, quantiser)

    def resume(self, values: dict[str, torch.Tensor], first: int, quantiser: Quantiser | None = None,
               stop: int | None = None) -> dict[str, torch.Tensor]:
        """`values` (the tensors the steps before `first` wrote) and those of steps `first` to `stop` (exclusive;
        default the last): calibration tries many grids for one tensor, and the steps before it give the same
        tensors for every grid."""
        values = dict(values)
        for step in self.steps[first:stop]:
            out = step.run([values[name] for name in step.inputs], quantiser)
            values[step.output] = out if quantiser is None else quantiser.tensor(step.output, out)
        return values


@dataclass
class _Builder:
    """Steps appended in order, each output named t<index>."""

    steps: list[Step]

    def add(self, make: Callable[[str], Step]) -> str:
        step = make(f"t{len(self.steps) + 1}")
        self.steps.append(step)
        return step.output


def _fold(conv: nn.Conv1d, norm: nn.BatchNorm1d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv's weight and bias with the BatchNorm after it (eval statistics) folded in."""
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    if norm is None:
        return weight, bias
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    return weight * scale.view(-1, 1, 1), (bias - norm.running_mean) * scale + norm.bias.detach()


def _pads(conv: nn.Conv1d, before: nn.Module | None) -> tuple[int, int]:
    left = right = conv.padding[0] if isinstance(conv.padding, tuple) else 0
    if isinstance(before, nn.ConstantPad1d):
        if before.value != 0.0:
            raise HarkdError(f"int8 export: padding with {before.value} is not supported (zeros only)")
        left, right = left + before.padding[0], right + before.padding[1]
    return left, right


_SKIPPED = (nn.Dropout, nn.Identity, nn.ConstantPad1d)  # a pad is merged into the conv after it


def _lower_sequence(modules: list[nn.Module], x: str, out: _Builder) -> str:
    """A Sequential's modules as steps: conv (+ BatchNorm) (+ ReLU | hard-swish | hard-sigmoid) fused."""
    i = 0
    while i < len(modules):
        module = modules[i]
        if isinstance(module, nn.Conv1d):
            x, i = _lower_conv(modules, i, x, out)
            continue
        if isinstance(module, nn.Hardswish):
            x = out.add(lambda name, x=x: HardSwish((x,), name))
        elif isinstance(module, nn.Sequential):
            x = _lower_sequence(list(module), x, out)
        elif type(module) in _LOWER_MODULE:
            x = _LOWER_MODULE[type(module)](module, x, out)
        elif not isinstance(module, _SKIPPED):
            raise HarkdError(f"int8 export: {type(module).__name__} has no int8 kernel here (supported: Conv1d, "
                             f"BatchNorm1d, ReLU, Hardswish, Hardsigmoid after a conv, Linear, Dropout)")
        i += 1
    return x


def _lower_conv(modules: list[nn.Module], i: int, x: str, out: _Builder) -> tuple[str, int]:
    conv = modules[i]
    if conv.dilation[0] != 1 or conv.groups not in (1, conv.in_channels) or conv.padding_mode != "zeros":
        raise HarkdError(f"int8 export: Conv1d with dilation {conv.dilation[0]}, groups {conv.groups}, padding mode "
                         f"{conv.padding_mode} is not supported")
    following = modules[i + 1:i + 3]
    norm = following[0] if following and isinstance(following[0], nn.BatchNorm1d) else None
    after = following[1 if norm is not None else 0:][:1]
    act = type(after[0]) if after else None
    weight, bias = _fold(conv, norm)
    activation = {nn.ReLU: "relu", nn.Hardsigmoid: "clamp01"}.get(act, "none")
    if activation == "clamp01":
        weight, bias = weight / 6, (bias + 3) / 6
    pads = _pads(conv, modules[i - 1] if i else None)
    x = out.add(lambda name: Conv((x,), name, weight, bias, conv.stride[0], pads, conv.groups, activation))
    consumed = 1 + (norm is not None) + (activation != "none")
    if act is nn.Hardswish:
        x = out.add(lambda name, x=x: HardSwish((x,), name))
        consumed += 1
    return x, i + consumed


def _lower_linear(module: nn.Linear, x: str, out: _Builder) -> str:
    bias = module.bias.detach() if module.bias is not None else torch.zeros(module.out_features)
    return out.add(lambda name: Dense((x,), name, module.weight.detach(), bias))


def _lower_squeeze_excite(module: nn.Module, x: str, out: _Builder) -> str:
    gate = _lower_sequence(list(module.gate), x, out)
    return out.add(lambda name: Mul((x, gate), name))


def _lower_inverted_residual(module: nn.Module, x: str, out: _Builder) -> str:
    body = _lower_sequence(list(module.body), x, out)
    return out.add(lambda name: Add((x, body), name)) if module.residual else body


def _lower_pool(module: nn.AdaptiveAvgPool1d, x: str, out: _Builder) -> str:
    if module.output_size not in (1, (1,)):
        raise HarkdError(f"int8 export: AdaptiveAvgPool1d to {module.output_size} steps is not supported (to 1 only)")
    return out.add(lambda name: TimeMean((x,), name))


def _lower_cnn_student(model: nn.Module, out: _Builder) -> None:
    features = _lower_sequence(list(model.features), INPUT, out)
    pooled = out.add(lambda name: TimeMean((features,), name))
    _lower_linear(model.head, pooled, out)


def _lower_mobilenet(model: nn.Module, out: _Builder) -> None:
    if model.pool is not None or model.memory is not None:
        head = "attention" if model.pool is not None else "memory"
        raise HarkdError(f"int8 export: mobilenet_v3_1d's {head} head has no int8 kernel here (linear or mlp heads)")
    x = _lower_sequence(list(model.stem), INPUT, out)
    for stage in model.stages.values():
        x = _lower_sequence(list(stage), x, out)
    x = _lower_sequence(list(model.last_conv), x, out)
    pooled = out.add(lambda name: TimeMean((x,), name))
    _lower_sequence(list(model.mlp) if model.mlp is not None else [model.linear], pooled, out)


def _module_lowerings() -> dict[type, Callable[[nn.Module, str, _Builder], str]]:
    from harkd.models.mobilenet import InvertedResidual, SqueezeExcite

    return {nn.Linear: _lower_linear, SqueezeExcite: _lower_squeeze_excite, InvertedResidual: _lower_inverted_residual,
            nn.AdaptiveAvgPool1d: _lower_pool}


_LOWER_MODULE = _module_lowerings()
# Layers the lowerings handle (or containers): what an error for an unlowerable model leaves out of its list.
_KNOWN = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.Hardswish, nn.Hardsigmoid, nn.Linear, nn.Sequential, nn.ModuleList,
          nn.ModuleDict, *_SKIPPED, *_LOWER_MODULE)
LOWERINGS: dict[str, Callable[[nn.Module, _Builder], None]] = {
    "cnn_student": _lower_cnn_student, "mobilenet_v3_1d": _lower_mobilenet,
}


def lower(model: nn.Module, name: str) -> Program:
    """`model` (registered as `name`, in eval mode) as a Program; a model or layer with no int8 route is a one-line
    error naming it."""
    if name not in LOWERINGS:
        kinds = sorted({type(m).__name__ for m in list(model.modules())[1:] if not isinstance(m, _KNOWN)})
        raise HarkdError(f"int8 export: {name} has no int8 route (it holds {', '.join(kinds) or 'no known layer'}; "
                         f"models with one: {', '.join(LOWERINGS)})")
    out = _Builder([])
    LOWERINGS[name](model, out)
    return Program(out.steps, name).eval()
