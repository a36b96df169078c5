"""Training on Lightning: one module for supervised models and students with a distiller, early stopping on
validation macro-F1 (validation windows come from training subjects), the best checkpoint restored at the end.

Data live in memory as tensors and batches are index tensors: the windows of a HAR dataset fit in memory, and the
teacher's outputs are precomputed once per fold and seed (`TeacherTargets`), so a student's epoch never runs the
teacher.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from harkd.errors import HarkdError
from harkd.metrics import macro_f1
from harkd.models.base import ModelOutput


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 6
    accelerator: str = "auto"
    deterministic: bool = True
    progress: bool = False  # the runner shows one bar over folds; a bar per fit is noise over 100+ fits

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, where: str) -> "TrainConfig":
        values = dict(values or {})
        valid = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(valid)
        if unknown:
            raise HarkdError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(valid)}")
        casts = {"epochs": int, "batch_size": int, "lr": float, "weight_decay": float, "patience": int,
                 "accelerator": str, "deterministic": bool, "progress": bool}
        try:
            return cls(**{k: casts[k](v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise HarkdError(f"{where}: {exc}") from None


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

    def to(self, device: torch.device) -> "TeacherTargets":
        move = lambda named: {k: v.to(device) for k, v in named.items()}  # noqa: E731
        return TeacherTargets(self.logits.to(device), move(self.reps), move(self.head_logits), move(self.maps))


def concat_targets(first: TeacherTargets, second: TeacherTargets) -> TeacherTargets:
    """The targets of two window sets, one after the other (training windows, then calibration windows)."""
    join = lambda a, b: {k: torch.cat([a[k], b[k]]) for k in a}  # noqa: E731
    return TeacherTargets(torch.cat([first.logits, second.logits]), join(first.reps, second.reps),
                          join(first.head_logits, second.head_logits), join(first.maps, second.maps))


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> TeacherTargets:
    """All outputs of a model in eval mode, batched, on the model's device; returned on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    outs = [model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    cat = lambda key, attr: torch.cat([getattr(o, attr)[key] for o in outs]).cpu()  # noqa: E731
    return TeacherTargets(torch.cat([o.logits for o in outs]).cpu(),
                          {k: cat(k, "reps") for k in outs[0].reps},
                          {k: cat(k, "head_logits") for k in outs[0].head_logits},
                          {k: cat(k, "maps") for k in outs[0].maps})


class FitModule(L.LightningModule):
    """Trains `model` on CE (or the model's own `loss`, e.g. TSAK's multi-head loss), or on a distiller's terms.

    `teacher` holds precomputed TeacherTargets per split; the distiller (an nn.Module whose connectors train with
    the student) maps (student_out, teacher_out, y) to named, weighted loss terms, CE on the labels included.
    """

    def __init__(self, model: nn.Module, data: Mapping[str, tuple[torch.Tensor, torch.Tensor]], config: TrainConfig,
                 distiller: nn.Module | None = None, teacher: Mapping[str, TeacherTargets] | None = None):
        super().__init__()
        self.model, self.distiller, self.config = model, distiller, config
        self.data = dict(data)
        self.teacher = dict(teacher or {})
        self._val_preds: list[torch.Tensor] = []
        self._epoch_terms: dict[str, torch.Tensor] = {}
        self._epoch_windows = 0

    def on_fit_start(self) -> None:
        self.data = {k: (x.to(self.device), y.to(self.device)) for k, (x, y) in self.data.items()}
        self.teacher = {k: t.to(self.device) for k, t in self.teacher.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The sampler yields whole batches of indices and the dataset indexes them in one call: no per-window
        # fetch-and-collate, which would cost more than a small student's step.
        indices = TensorDataset(torch.arange(len(self.data[split][1])))
        order = RandomSampler(indices) if shuffle else SequentialSampler(indices)
        drop_last = shuffle and len(indices) > self.config.batch_size
        batches = BatchSampler(order, self.config.batch_size, drop_last=drop_last)
        return DataLoader(indices, sampler=batches, batch_size=None)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # A batch is one index tensor; Lightning's generic collection walk costs more than moving it.
        return [index.to(device) for index in batch]

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def training_step(self, batch, _):
        (index,) = batch
        x, y = self.data["train"][0][index], self.data["train"][1][index]
        out = self.model(x)
        if self.distiller is not None:  # its terms include the (weighted) CE on the labels
            terms = self.distiller(out, self.teacher["train"].take(index), y)
        else:
            own_loss = getattr(self.model, "loss", None)
            terms = {"loss_ce": own_loss(out, y) if own_loss else F.cross_entropy(out.logits, y)}
        loss = sum(terms.values())
        # Summed here and logged once per epoch: Lightning's per-step log_dict costs as much as a small student's
        # forward pass (benchmarks/bench_train_overhead.py).
        for name, value in terms.items():
            self._epoch_terms[name] = self._epoch_terms.get(name, 0.0) + value.detach() * len(index)
        self._epoch_windows += len(index)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict({name: total / self._epoch_windows for name, total in self._epoch_terms.items()})
        self._epoch_terms, self._epoch_windows = {}, 0

    def validation_step(self, batch, _):
        (index,) = batch
        self._val_preds.append(self.model(self.data["val"][0][index]).logits.argmax(1))

    def on_validation_epoch_end(self) -> None:
        preds = torch.cat(self._val_preds).cpu().numpy()
        self._val_preds.clear()
        self.log("val_f1", macro_f1(self.data["val"][1].cpu().numpy(), preds), prog_bar=True)

    def configure_optimizers(self):
        params = list(self.model.parameters()) + (list(self.distiller.parameters()) if self.distiller else [])
        optimiser = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=self.config.epochs)
        return {"optimizer": optimiser, "lr_scheduler": schedule}


@dataclass
class FitResult:
    model: nn.Module
    epochs: int
    best_val_f1: float
    train_time_s: float


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
        config: TrainConfig, workdir: Path, *, seed: int, distiller: nn.Module | None = None,
        teacher: Mapping[str, TeacherTargets] | None = None) -> FitResult:
    """Train with early stopping on validation macro-F1 and return the model with its best weights restored."""
    L.seed_everything(seed, workers=False, verbose=False)
    module = FitModule(model, {"train": train, "val": val}, config, distiller, teacher)
    checkpoint = ModelCheckpoint(dirpath=workdir, filename="best", monitor="val_f1", mode="max",
                                 save_weights_only=True, enable_version_counter=False)
    stopper = EarlyStopping(monitor="val_f1", mode="max", patience=config.patience)
    trainer = L.Trainer(max_epochs=config.epochs, accelerator=config.accelerator, devices=1,
                        deterministic="warn" if config.deterministic else False, logger=False,
                        callbacks=[checkpoint, stopper], enable_progress_bar=config.progress,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=workdir)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Index-tensor loaders need no workers; Lightning's advice to add some is noise here.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*(LeafSpec|treespec).*")
        trainer.fit(module)
    elapsed = time.perf_counter() - start
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(best)
    model.cpu().eval()
    return FitResult(model, trainer.current_epoch, float(checkpoint.best_model_score or 0.0), elapsed)


def quiet_lightning() -> None:
    """Lightning's per-fit banners (GPU available, TPU, ...) drown the runner's own progress."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)


def evaluate(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Test predictions, macro-F1 and accuracy."""
    preds = predict(model, x).logits.argmax(1).numpy()
    return preds, macro_f1(y, preds), float((preds == y).mean())
