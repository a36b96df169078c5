"""Training: one loop for supervised models and for students with a distiller, early stopping on validation
macro-F1 (validation windows come from training subjects), the best checkpoint restored at the end.

Data live in memory as tensors and batches are index tensors: the windows of a HAR dataset fit in memory, and the
teacher's outputs are precomputed once per fold and seed (`TeacherTargets`), so a student's epoch never runs the
teacher.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field, field_validator
from tqdm import tqdm

from harkd.distill.base import Distiller
from harkd.errors import HarkdError
from harkd.metrics import macro_f1
from harkd.models.base import ModelOutput
from harkd.schema import Bool, Float, NonNegativeInt, PositiveInt, config_dataclass


@config_dataclass("train")
class TrainConfig:
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 64
    lr: Annotated[Float, Field(ge=0)] = 2e-3
    weight_decay: Annotated[Float, Field(ge=0)] = 1e-4
    patience: NonNegativeInt = 6
    accelerator: Literal["auto", "cpu", "cuda", "gpu"] = "auto"  # auto: the GPU when there is one
    deterministic: Bool = True
    progress: Bool = False  # the runner shows one bar over folds; a bar per fit is noise over 100+ fits
    # bf16: the training steps' forward passes under autocast (mixed precision); validation, the restored model and
    # the teacher's targets stay fp32. A CPU runs it too (torch's CPU autocast), usually slower than fp32.
    precision: Literal["fp32", "bf16"] = "fp32"

    @field_validator("accelerator")
    @classmethod
    def _cuda_when_asked(cls, accelerator: str) -> str:
        """Asking for CUDA where there is none fails when the config is read, before any data are loaded."""
        if (missing := _missing_cuda(accelerator)) is not None:
            raise ValueError(missing)
        return accelerator


def _missing_cuda(accelerator: str) -> str | None:
    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        return (f"{accelerator!r} asked for, but torch {torch.__version__} sees no CUDA device; use accelerator: "
                f"auto or cpu")
    return None


class _Rows(Mapping[str, torch.Tensor]):
    """Read-only view of named tensors at one batch's rows, indexed on access."""

    def __init__(self, named: Mapping[str, torch.Tensor], index: torch.Tensor):
        self._named, self._index = named, index

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._named[name][self._index]

    def __iter__(self):
        return iter(self._named)

    def __len__(self) -> int:
        return len(self._named)


@dataclass
class TeacherTargets:
    """The frozen teacher's outputs for every window of one split, detached: what distillers read."""

    logits: torch.Tensor
    reps: dict[str, torch.Tensor]
    head_logits: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def take(self, index: torch.Tensor) -> ModelOutput:
        """The batch's rows; named tensors are indexed when a distiller reads them, so a strategy that reads only
        the logits does not pay for copying the teacher's feature maps every step."""
        return ModelOutput(self.logits[index], _Rows(self.reps, index), _Rows(self.head_logits, index),
                           _Rows(self.maps, index))

    def subset(self, index: torch.Tensor | np.ndarray) -> "TeacherTargets":
        """The targets of some of the windows, copied."""
        index = torch.as_tensor(index)
        pick = lambda named: {k: v[index] for k, v in named.items()}  # noqa: E731
        return TeacherTargets(self.logits[index], pick(self.reps), pick(self.head_logits), pick(self.maps))

    def to(self, device: torch.device) -> "TeacherTargets":
        move = lambda named: {k: v.to(device) for k, v in named.items()}  # noqa: E731
        return TeacherTargets(self.logits.to(device), move(self.reps), move(self.head_logits), move(self.maps))


def concat_targets(*parts: TeacherTargets) -> TeacherTargets:
    """The targets of several window sets, one after the other (e.g. training, calibration, mixed windows)."""
    if len(parts) == 1:
        return parts[0]

    def join(attr: str) -> dict[str, torch.Tensor]:
        return {k: torch.cat([getattr(p, attr)[k] for p in parts]) for k in getattr(parts[0], attr)}

    return TeacherTargets(torch.cat([p.logits for p in parts]), join("reps"), join("head_logits"), join("maps"))


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
            ) -> TeacherTargets:
    """All outputs of a model in eval mode, batched, on `device` (default: the model's), in fp32; returned on the
    CPU, where every consumer of targets finds them (fit moves a KD fit's targets to its device once), and the model
    is back on its own device afterwards."""
    model.eval()
    home = next(model.parameters()).device
    device = device or home
    model.to(device)
    try:
        outs = [model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    finally:
        model.to(home)
    cat = lambda key, attr: torch.cat([getattr(o, attr)[key] for o in outs]).cpu()  # noqa: E731
    return TeacherTargets(torch.cat([o.logits for o in outs]).cpu(),
                          {k: cat(k, "reps") for k in outs[0].reps},
                          {k: cat(k, "head_logits") for k in outs[0].head_logits},
                          {k: cat(k, "maps") for k in outs[0].maps})


class _Step:
    """One training step's loss: CE (or the model's own `loss`, e.g. TSAK's multi-head loss), or a distiller's
    terms. The distiller (an nn.Module whose connectors train with the student) maps (student_out, teacher_out, y)
    to named, weighted loss terms, CE on the labels included; `teacher` holds its precomputed TeacherTargets."""

    def __init__(self, model: nn.Module, distiller: Distiller | None, teacher: TeacherTargets | None):
        self.model, self.distiller, self.teacher = model, distiller, teacher
        self.own_loss = getattr(model, "loss", None)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        if self.distiller is not None:
            return self.distiller(out, self.teacher.take(index), y)
        return {"loss_ce": self.own_loss(out, y) if self.own_loss else F.cross_entropy(out.logits, y)}


@dataclass
class FitResult:
    model: nn.Module
    epochs: int
    best_val_f1: float
    train_time_s: float
    history: list[dict[str, float]]  # per epoch: each loss term's mean over the training windows, and val_f1


def _draw_seed() -> int:
    return int(torch.empty((), dtype=torch.int64).random_().item())


def _shuffled(n: int) -> torch.Tensor:
    """A random order drawn from the global generator exactly as a shuffling DataLoader draws it (its iterator's
    base seed, then its RandomSampler's seed), so seeded runs repeat the Lightning-Trainer engine's runs exactly."""
    _draw_seed()
    return torch.randperm(n, generator=torch.Generator().manual_seed(_draw_seed()))


@torch.inference_mode()
def _predicted_labels(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    model.eval()
    labels = [model(x[i:i + batch_size]).logits.argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(labels).cpu().numpy()


def _set_determinism(on: bool) -> None:
    # What Lightning's Trainer(deterministic="warn") sets: ops without a deterministic kernel warn, not fail.
    torch.use_deterministic_algorithms(on, warn_only=True)
    if on:
        torch.backends.cudnn.benchmark = False
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"


EpochHook = Callable[[Path, int, int], None]
# Scoped by `epoch_hook`, never set for good: a worker process (a Ray worker's above all) runs other work next.
_EPOCH_HOOK: ContextVar[EpochHook | None] = ContextVar("harkd_epoch_hook", default=None)


@contextmanager
def epoch_hook(hook: EpochHook) -> Iterator[None]:
    """Within the block, `hook` is called after every epoch of every fit with (the fit's workdir, epoch, epochs):
    how a run tells which model each worker process is training (harkd.experiment.progress)."""
    token = _EPOCH_HOOK.set(hook)
    try:
        yield
    finally:
        _EPOCH_HOOK.reset(token)


def _seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators, as Lightning's seed_everything seeded them (so runs repeat
    the committed ones, drawn under Lightning)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # all CUDA devices too


def training_device(config: TrainConfig) -> torch.device:
    """Where a fit with `config` trains: `auto` takes the GPU when there is one; `gpu` and `cuda` insist on one
    (checked again here: a config read on a machine with CUDA can reach a process without it, e.g. pickled)."""
    if (missing := _missing_cuda(config.accelerator)) is not None:
        raise HarkdError(f"train.accelerator: {missing}")
    return torch.device("cuda" if config.accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """A training step's forward pass: bf16 autocast when asked for, else a disabled autocast (plain fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        config: TrainConfig, workdir: Path, *, seed: int, distiller: Distiller | None = None,
        teacher: Mapping[str, TeacherTargets] | None = None) -> FitResult:
    """Train with early stopping on validation macro-F1 and return the model with its best weights restored.

    `config.accelerator` picks the device and `config.precision` the steps' arithmetic. The loop is ours: Lightning
    Trainer's per-step hooks cost as much as a small student's step (benchmarks/bench_train_overhead.py), and Fabric
    gave nothing we used beyond the device.
    Per epoch: shuffled index batches over tensors held on the device (the last partial batch dropped), AdamW with a
    cosine schedule, validation macro-F1, the best weights checkpointed to `workdir`/best.ckpt, and a stop after
    `patience` epochs without improvement.
    """
    _seed_everything(seed)
    _set_determinism(config.deterministic)
    device = training_device(config)
    model.to(device)
    if distiller is not None:
        distiller.to(device)
    (x, y), (x_val, y_val) = (tuple(t.to(device) for t in pair) for pair in (train, val))
    step = _Step(model, distiller, teacher["train"].to(device) if distiller is not None else None)
    optimiser = _optimiser(model, distiller, config)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    history, best = _epochs_until_stale(step, optimiser, schedule, (x, y), (x_val, y_val.cpu().numpy()), config,
                                        workdir)
    elapsed = time.perf_counter() - start
    model.load_state_dict(torch.load(workdir / CHECKPOINT, map_location=device, weights_only=True))
    model.cpu().eval()
    return FitResult(model, len(history), best, elapsed, history)


CHECKPOINT = "best.ckpt"


def _epochs_until_stale(step: "_Step", optimiser: torch.optim.Optimizer,
                        schedule: torch.optim.lr_scheduler.LRScheduler, train: tuple[torch.Tensor, torch.Tensor],
                        val: tuple[torch.Tensor, np.ndarray], config: TrainConfig,
                        workdir: Path) -> tuple[list[dict[str, float]], float]:
    """Epochs until `patience` pass without a better validation macro-F1 (or all are done), the best weights
    checkpointed to `workdir`/CHECKPOINT: the epochs' history and the best score."""
    best, stale, history = -1.0, 0, []
    bar = tqdm(range(config.epochs), desc="epochs", unit="epoch", disable=not config.progress, leave=False)
    for epoch in bar:
        history.append(_epoch(step, optimiser, schedule, train, val, config, epoch))
        val_f1 = history[-1]["val_f1"]
        bar.set_postfix(val_f1=f"{val_f1:.3f}")
        if (hook := _EPOCH_HOOK.get()) is not None:
            hook(workdir, epoch + 1, config.epochs)
        if val_f1 > best:
            best, stale = val_f1, 0
            torch.save(step.model.state_dict(), workdir / CHECKPOINT)
        else:
            stale += 1
            if stale >= config.patience:
                break
    bar.close()
    return history, best


def _epoch(step: "_Step", optimiser: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
           train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, np.ndarray], config: TrainConfig,
           epoch: int) -> dict[str, float]:
    """One epoch: the training steps, the schedule's step, then the validation macro-F1 (with each loss term's mean,
    the epoch's history entry)."""
    step.model.train()
    if step.distiller is not None:
        step.distiller.start_epoch(epoch, config.epochs)
        step.distiller.train()
    mean_terms = _train_epoch(step, optimiser, *train, config)
    schedule.step()
    _draw_seed()  # the validation DataLoader's base seed, see _shuffled
    return {**mean_terms, "val_f1": macro_f1(val[1], _predicted_labels(step.model, val[0], config.batch_size))}


def _optimiser(model: nn.Module, distiller: Distiller | None, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the student's weights and the distiller's own (projectors, heads)."""
    params = list(model.parameters()) + (list(distiller.parameters()) if distiller is not None else [])
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _train_epoch(step: _Step, optimiser: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 config: TrainConfig) -> dict[str, float]:
    """One pass of shuffled batches (the last partial one dropped); each loss term's mean over the windows seen."""
    batch = config.batch_size
    last_start = len(y) - batch if len(y) > batch else 0  # one short batch when the data are smaller than one
    order = _shuffled(len(y)).to(x.device)
    totals: dict[str, torch.Tensor] = {}
    seen = 0
    for first in range(0, last_start + 1, batch):
        index = order[first:first + batch]
        with _autocast(x.device, config.precision):
            terms = step(x[index], y[index], index)
        optimiser.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimiser.step()
        for name, value in terms.items():  # summed on the device: no host sync per step
            totals[name] = totals.get(name, 0.0) + value.detach() * len(index)
        seen += len(index)
    return {name: float(total) / seen for name, total in totals.items()}


def evaluate(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Test predictions, macro-F1 and accuracy (labels only: the model's reps and maps are not gathered)."""
    preds = _predicted_labels(model, x.to(next(model.parameters()).device), 512)
    return preds, macro_f1(y, preds), float((preds == y).mean())
