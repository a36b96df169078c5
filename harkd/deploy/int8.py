"""A lowered program (harkd.deploy.lowering) in int8 as TensorFlow Lite's integer kernels run it: activations per
tensor (scale, zero point), conv weights symmetric per output channel, dense weights symmetric per tensor, biases in
int32 at the input's scale times the weight's.

Post-training: each tensor's range is clipped where the int8 program's class distribution comes closest to fp32's on
calibration windows (a search over percentile pairs, tensor by tensor). Quantisation-aware: the program is fine-tuned
with every weight and tensor rounded to its int8 grid in the forward pass (straight-through gradients) to reproduce the
fp32 model's class distribution on its training windows (no labels needed), then calibrated again. `FakeQuant` is the
arithmetic both use and what the writers' checks compare against.
"""

from __future__ import annotations

import copy
from dataclasses import astuple, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from harkd.deploy.lowering import INPUT, Conv, Program, Step, TimeMean

SAMPLES_PER_TENSOR = 200_000  # values kept per tensor for its percentile (a seeded subsample beyond that)


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int

    @classmethod
    def of_range(cls, low: float, high: float) -> "QParams":
        """The affine int8 grid over [low, high] widened to hold 0 (so zero padding is exact)."""
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        scale = (high - low) / 255 if high > low else 1.0
        return cls(scale, int(np.clip(round(-128 - low / scale), -128, 127)))

    def quantise(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(np.asarray(x) / self.scale) + self.zero_point, -128, 127).astype(np.int8)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        return (np.asarray(q, np.float32) - self.zero_point) * np.float32(self.scale)


UNIT_RANGE = QParams.of_range(0.0, 1.0)  # a folded hard-sigmoid's output


def weight_scales(step: Step, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric int8 scales (max |w| / 127): one per output channel for a conv, one for a dense layer's matrix,
    repeated per output row."""
    w = (step.weight if weight is None else weight).detach()
    peak = w.abs().amax(dim=tuple(range(1, w.dim()))) if isinstance(step, Conv) else w.abs().max().expand(len(w))
    return torch.where(peak > 0, peak / 127, torch.ones_like(peak))


@dataclass(frozen=True)
class IntegerWeights:
    """A conv's or dense layer's weights as the kernels store them: int8 (per output channel: `scales`) and int32
    biases at the input's scale times each channel's weight scale."""

    weight: np.ndarray  # int8, the step's weight shape
    scales: np.ndarray  # float64, one per output channel
    bias: np.ndarray  # int32
    bias_scales: np.ndarray  # float64


def integer_weights(step: Step, input_scale: float) -> IntegerWeights:
    scales = weight_scales(step).numpy().astype(np.float64)
    w = step.weight.detach().numpy().astype(np.float64)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    bias_scales = input_scale * scales
    bias = np.round(step.bias.detach().numpy().astype(np.float64) / bias_scales).astype(np.int32)
    return IntegerWeights(q, scales, bias, bias_scales)


class FakeQuant:
    """Rounds weights and tensors to their int8 grids (a Quantiser for Program.forward)."""

    def __init__(self, qparams: dict[str, QParams]):
        self.qparams = qparams

    def weight(self, step: Step, weight: torch.Tensor) -> torch.Tensor:
        scales = weight_scales(step, weight).to(weight.dtype)
        zeros = torch.zeros(len(scales), dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scales, zeros, 0, -127, 127)

    def tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        q = self.qparams[name]
        return torch.fake_quantize_per_tensor_affine(value, q.scale, q.zero_point, -128, 127)


@dataclass
class _Recorder:
    """Keeps a seeded subsample of every tensor's values (a Quantiser that changes nothing)."""

    weights: FakeQuant | None = None
    seen: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def weight(self, step: Step, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.weights is None else self.weights.weight(step, weight)

    def tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        flat = value.detach().reshape(-1).numpy()
        if flat.size > SAMPLES_PER_TENSOR:
            flat = flat[self.rng.choice(flat.size, SAMPLES_PER_TENSOR, replace=False)]
        self.seen.setdefault(name, []).append(flat)
        return value


@dataclass
class Int8Program:
    """A program with the int8 grid of every tensor; `method` says how the grid and weights were found."""

    program: Program
    qparams: dict[str, QParams]
    method: str = "post-training"

    @torch.no_grad()
    def logits(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """The int8 arithmetic simulated in float (what the writers' runtimes should give, to rounding)."""
        quant = FakeQuant(self.qparams)
        parts = [self.program(torch.from_numpy(x[i:i + batch]), quant)[self.program.logits].squeeze(-1).numpy()
                 for i in range(0, len(x), batch)]
        return np.concatenate(parts)


# Candidate clipping points of a tensor's range, as percentiles of its calibration values: the low end may clip far
# (a class score far below the best one never decides the class), the high end only the rarest values.
LOW_PERCENTILES = (0, 0.001, 0.01, 0.1, 1, 5, 25)
HIGH_PERCENTILES = (100, 99.999, 99.99, 99.9, 99.5)


def _fixes_grid(step: Step) -> bool:
    """A time mean keeps its input's grid (TFLite's average pool); a folded hard-sigmoid's is [0, 1]."""
    return isinstance(step, TimeMean) or (isinstance(step, Conv) and step.activation == "clamp01")


def _fixed_grids(program: Program, qparams: dict[str, QParams]) -> dict[str, QParams]:
    """`qparams` with the grids the kernels fix set."""
    for step in filter(_fixes_grid, program.steps):
        qparams[step.output] = qparams[step.inputs[0]] if isinstance(step, TimeMean) else UNIT_RANGE
    return qparams


def _divergence(program: Program, qparams: dict[str, QParams], x: torch.Tensor, reference: torch.Tensor,
                before: tuple[int, dict[str, torch.Tensor]] | None = None) -> float:
    """KL divergence of the int8 class distribution from fp32's (`reference`: fp32 log-probabilities); `before`:
    the program resumed at that step from those tensors (which these grids do not change)."""
    quant = FakeQuant(qparams)
    values = program(x, quant) if before is None else program.resume(before[1], before[0], quant)
    out = values[program.logits].squeeze(-1)
    return float(F.kl_div(F.log_softmax(out, 1), reference, log_target=True, reduction="batchmean"))


def _prefix(program: Program, name: str, x: torch.Tensor, qparams: dict[str, QParams]
            ) -> tuple[int, dict[str, torch.Tensor]] | None:
    """The step writing tensor `name` and the int8 tensors before it (None for the input: its grid is applied before
    the first step)."""
    first = next((i for i, step in enumerate(program.steps) if step.output == name), None)
    if first is None:
        return None
    quant = FakeQuant(qparams)
    return first, program.resume({INPUT: quant.tensor(INPUT, x)}, 0, quant, stop=first)


@torch.no_grad()
def calibrate(program: Program, windows: np.ndarray, weights_rounded: bool = False, batch: int = 256
              ) -> dict[str, QParams]:
    """Each tensor's int8 grid for normalised `windows`: tensor by tensor in program order, the pair of clipping
    percentiles whose grid brings the int8 program's class distribution closest to fp32's (KL divergence) on the
    windows, the tensors not yet visited at their 0.01-99.99 percentile range."""
    recorder = _Recorder(FakeQuant({}) if weights_rounded else None)
    for i in range(0, len(windows), batch):
        program(torch.from_numpy(windows[i:i + batch]), recorder)
    values = {name: np.concatenate(parts) for name, parts in recorder.seen.items()}
    ranges = {name: QParams.of_range(np.percentile(v, 0.01), np.percentile(v, 99.99)) for name, v in values.items()}
    qparams = _fixed_grids(program, ranges)
    fixed = {step.output for step in program.steps if _fixes_grid(step)}
    x = torch.from_numpy(windows)
    reference = F.log_softmax(program(x)[program.logits].squeeze(-1), 1)
    for name, v in values.items():
        if name in fixed:
            continue
        grids = {QParams.of_range(lo, hi) for lo in np.percentile(v, LOW_PERCENTILES)
                 for hi in np.percentile(v, HIGH_PERCENTILES)}  # a ReLU's output has one low end: fewer grids
        candidates = [_fixed_grids(program, {**qparams, name: grid}) for grid in sorted(grids, key=astuple)]
        before = _prefix(program, name, x, qparams)
        qparams = min(candidates, key=lambda c: _divergence(program, c, x, reference, before))
    return qparams


def post_training(program: Program, windows: np.ndarray) -> Int8Program:
    return Int8Program(program, calibrate(program, windows))


def quantisation_aware(program: Program, calibration: np.ndarray, pool: np.ndarray, steps: int = 1000,
                       lr: float = 3e-5, batch: int = 128, seed: int = 0) -> Int8Program:
    """Fine-tunes a copy of `program` through FakeQuant (grids from `calibration`) to reproduce the fp32 program's
    class distribution (KL divergence) on the `pool` of training windows, then searches the grids again for the
    rounded weights."""
    torch.manual_seed(seed)
    tuned = copy.deepcopy(program).train()
    quant = FakeQuant(calibrate(program, calibration))
    x = torch.from_numpy(pool)
    with torch.no_grad():
        reference = F.log_softmax(program(x)[program.logits].squeeze(-1), 1)
    optimiser = torch.optim.Adam(tuned.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(len(x), (batch,), generator=generator)
        out = tuned(x[pick], quant)[tuned.logits].squeeze(-1)
        loss = F.kl_div(F.log_softmax(out, 1), reference[pick], log_target=True, reduction="batchmean")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    tuned.eval()
    return Int8Program(tuned, calibrate(tuned, calibration, weights_rounded=True), "quantisation-aware")
