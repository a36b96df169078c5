"""Trained teachers kept by content, so that a run, a confirmation or a screen that varies only students and methods
trains no teacher again. A teacher is looked up by what determines it: its training and validation inputs and
labels (bytes), its channel groups, the teacher's and semantic classifier's resolved settings, the seed, and the code
that trains it (the source of harkd/models, harkd/train and this stage, and torch's version); any change is another
key. What is kept is the weights and the fit records; the outputs students distil from are recomputed from the
weights, so every row is the same with and without the cache.

Where: $HARKD_TEACHERS, else the per-user cache directory (like the data root); `--no-teacher-cache` opts out.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch

from harkd.files import atomic_output
from harkd.train.engine import FitResult

_CODE = ("models", "train", "experiment/teacher.py", "experiment/teacher_cache.py")  # under harkd/: what trains one


def teacher_root() -> Path:
    """HARKD_TEACHERS if set, else the per-user cache directory."""
    env = os.environ.get("HARKD_TEACHERS")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("harkd")) / "teachers"


@functools.cache
def code_fingerprint() -> str:
    """The source of what trains a teacher, and torch's version: a change to either is another key."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(torch.__version__.encode())
    for part in _CODE:
        for path in sorted((package / part).rglob("*.py")) if (package / part).is_dir() else [package / part]:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _tensor_digest(digest: Any, tensor: torch.Tensor) -> None:
    array = tensor.detach().cpu().contiguous().numpy()
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())


def teacher_key(settings: Any, tensors: list[torch.Tensor], groups: list[list[int]], n_classes: int,
                seed: int) -> str:
    """The content address of a teacher: `settings` (a dataclass of the resolved specs), its training inputs and
    labels, channel groups, classes, seed and the code fingerprint."""
    # torch's thread count too: a reduction split over more threads may round differently
    digest = hashlib.sha256(json.dumps({"settings": asdict(settings), "groups": groups, "classes": n_classes,
                                        "seed": seed, "code": code_fingerprint(), "threads": torch.get_num_threads()},
                                       sort_keys=True, default=str).encode())
    for tensor in tensors:
        _tensor_digest(digest, tensor)
    return digest.hexdigest()


@dataclass(frozen=True)
class KeptFit:
    """A FitResult without its model: what the rows read (epochs, best validation F1, time, history)."""

    epochs: int
    best_val_f1: float
    train_time_s: float
    history: list[dict[str, float]]

    @classmethod
    def of(cls, fit: FitResult) -> "KeptFit":
        return cls(fit.epochs, fit.best_val_f1, fit.train_time_s, fit.history)

    def with_model(self, model: torch.nn.Module) -> FitResult:
        return FitResult(model, self.epochs, self.best_val_f1, self.train_time_s, self.history)


@dataclass(frozen=True)
class TeacherStore:
    """Teachers by content address under `root` (one file each, written atomically: concurrent runs are safe)."""

    root: Path

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The kept teacher: {"teacher": state, "fit": KeptFit, "semantic": state | None, "semantic_fit": ...};
        None when absent or unreadable (a damaged file is trained again, never trusted)."""
        try:
            raw = torch.load(self.path(key), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
            return None
        return {**raw, "fit": KeptFit(**raw["fit"]),
                "semantic_fit": None if raw["semantic_fit"] is None else KeptFit(**raw["semantic_fit"])}

    def save(self, key: str, teacher: torch.nn.Module, fit: FitResult, semantic: torch.nn.Module | None,
             semantic_fit: FitResult | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        content = {"teacher": teacher.state_dict(), "fit": asdict(KeptFit.of(fit)),
                   "semantic": None if semantic is None else semantic.state_dict(),
                   "semantic_fit": None if semantic_fit is None else asdict(KeptFit.of(semantic_fit))}
        with atomic_output(self.path(key)) as tmp:
            torch.save(content, tmp)


__all__ = ["KeptFit", "TeacherStore", "code_fingerprint", "teacher_key", "teacher_root"]
