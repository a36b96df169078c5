"""A trained model as one self-describing file: weights, how to rebuild it, which channels in which order and units it
reads, the normalisation fitted on its training windows, its classes, and where it came from.

`harkd run --keep-models` writes one bundle per trained model; `load_bundle(path).predict(raw_windows)` gives class
probabilities from raw sensor windows, and `harkd export` turns a bundle into ONNX (harkd.deploy.onnx_export).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from harkd.data.recording import ChannelSpec
from harkd.data.splits import Normaliser
from harkd.data.windowing import WindowSet
from harkd.data.units import channel_factors
from harkd.errors import HarkdError
from harkd.files import atomic_output
from harkd.models.base import build_model
from harkd.models.tsak import TwoStageTeacher, semantic_input_dims

FORMAT, VERSION = "harkd-model", 1


@dataclass
class ModelBundle:
    model: str                       # registered model name
    params: dict[str, Any]           # its config options
    channels: list[dict[str, str]]   # ChannelSpec.to_dict() of each input channel, in input order
    class_names: list[str]
    window: int                      # samples per window
    rate_hz: float
    mean: list[float]                # per-channel normalisation, fitted on the training windows
    std: list[float]
    state_dict: dict[str, torch.Tensor]
    channel_groups: list[list[int]] | None = None  # the teacher's sensor tokens
    provenance: dict[str, Any] = field(default_factory=dict)  # dataset, fold, seed, role, method, macro_f1, ...
    stride: int | None = None        # the run's window hop in samples (None: kept before strides were recorded)
    # A TSAK teacher's stage-2 classifier: {"model", "params", "state_dict"}; SC-Logit distils its logits.
    semantic: dict[str, Any] | None = None

    @classmethod
    def of(cls, model: nn.Module, name: str, params: dict[str, Any], channels: Sequence[ChannelSpec],
           class_names: Sequence[str], window: int, rate_hz: float, normaliser: Normaliser,
           channel_groups: list[list[int]] | None = None, **provenance: Any) -> "ModelBundle":
        return cls(name, dict(params), [c.to_dict() for c in channels], list(class_names), int(window),
                   float(rate_hz), normaliser.mean.tolist(), normaliser.std.tolist(), _weights(model), channel_groups,
                   dict(provenance))

    def with_semantic(self, semantic: nn.Module, name: str, params: dict[str, Any]) -> "ModelBundle":
        """The teacher's bundle carrying its semantic classifier too (what every KD strategy may need of it)."""
        return replace(self, semantic={"model": name, "params": dict(params), "state_dict": _weights(semantic)})

    def personalised(self, model: nn.Module, report: dict[str, Any]) -> "ModelBundle":
        """This student's bundle with `model`'s weights (the same architecture, adapted to one worker) and the
        session's report as its provenance "personalised"."""
        return replace(self, state_dict=_weights(model), provenance={**self.provenance, "personalised": report})

    def build_teacher(self) -> nn.Module:
        """The frozen teacher as distillers see it: with its semantic classifier's logits as
        head_logits["semantic"] when the bundle carries one."""
        teacher = self.build().requires_grad_(False)
        if self.semantic is None:
            return teacher
        semantic = build_model(self.semantic["model"], sum(semantic_input_dims(teacher.rep_dims)),
                               len(self.class_names), **self.semantic["params"])
        semantic.load_state_dict(self.semantic["state_dict"])
        return TwoStageTeacher(teacher, semantic).eval().requires_grad_(False)

    @property
    def hop(self) -> int:
        """The stride to window new data with: the run's, else the window length."""
        return self.stride or self.window

    @property
    def channel_names(self) -> list[str]:
        return [ChannelSpec(**c).name for c in self.channels]

    def build(self) -> nn.Module:
        """The model with its trained weights, in eval mode."""
        model = build_model(self.model, len(self.channels), len(self.class_names), self.channel_groups, **self.params)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise HarkdError(f"model {self.model}: the saved weights do not fit it ({str(exc).splitlines()[0]})") \
                from None
        return model.eval()

    def normalise(self, x: np.ndarray) -> np.ndarray:
        return Normaliser(np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32))(x)

    def normalised_inputs(self, windows: WindowSet, where: str) -> np.ndarray:
        """The model's inputs from `windows` of any channels that hold its own: picked, in its units, normalised."""
        return self.normalise(bundle_inputs(self, windows, where))

    def check_input(self, x: np.ndarray, where: str = "input") -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        expected = (len(self.channels), self.window)
        if x.ndim != 3 or x.shape[1:] != expected:
            raise HarkdError(f"{where}: expected windows of shape (N, {expected[0]}, {expected[1]}) "
                             f"(channels {', '.join(self.channel_names)}), got {x.shape}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise HarkdError(f"{where}: non-finite value in window {bad[0]}, channel {self.channel_names[bad[1]]}, "
                             f"sample {bad[2]}")
        return x

    def in_units(self, x: np.ndarray, channels: Sequence[ChannelSpec], where: str = "input") -> np.ndarray:
        """Raw windows (N, C, L) whose channels are `channels` (this model's, in its order) in the units the model
        was trained on: converted where they differ (g to m/s^2, deg/s to rad/s, ...), refused in one line where
        they cannot be (a.u. against uT, or different units of a modality harkd has no table for)."""
        names = [c.name for c in channels]
        if names != self.channel_names:
            raise HarkdError(f"{where}: channels {', '.join(names)} given, the model reads "
                             f"{', '.join(self.channel_names)}")
        factors = channel_factors(channels, [ChannelSpec(**c) for c in self.channels], where)
        return x if (factors == 1.0).all() else (np.asarray(x) * factors[:, None]).astype(np.float32)

    @torch.no_grad()
    def predict(self, x: np.ndarray, batch_size: int = 512, channels: Sequence[ChannelSpec] | None = None
                ) -> np.ndarray:
        """Class probabilities (N, classes) for raw (unnormalised) windows (N, channels, window); with `channels`
        (what x holds, with units), values in other units than the model's are converted or refused."""
        model = self.build()
        x = self.normalise(self.check_input(x if channels is None else self.in_units(x, channels)))
        parts = [torch.softmax(model(torch.from_numpy(x[i:i + batch_size])).logits, 1).numpy()
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.class_names)), np.float32)

    def save(self, path: Path) -> None:
        """Written whole or not at all."""
        with atomic_output(path) as tmp:
            torch.save({"format": FORMAT, "version": VERSION, **asdict(self)}, tmp)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's state, so later training of the model leaves the bundle as it was."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_bundle(path: Path) -> ModelBundle:
    """A bundle saved by `ModelBundle.save`; anything else is a one-line error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HarkdError(f"{path}: model file not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; text, random bytes or an empty file are refused here
        raise HarkdError(f"{path}: not a readable harkd model file (not a PyTorch file; kept models come from "
                         f"`harkd run --keep-models`)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # plain data and tensors only: no code runs
    except pickle.UnpicklingError:  # torch's text for this is a paragraph of advice that does not apply here
        raise HarkdError(f"{path}: not a harkd model file (a PyTorch file holding objects other than plain data and "
                         f"tensors)") from None
    except Exception as exc:  # a damaged zip fails anywhere in torch's reader; every such failure is this one line
        raise HarkdError(f"{path}: not a readable harkd model file (damaged PyTorch file: "
                         f"{type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise HarkdError(f"{path}: not a harkd model file (written by `harkd run --keep-models`)")
    if raw.get("version") != VERSION:
        raise HarkdError(f"{path}: harkd model format version {raw.get('version')}; this harkd reads {VERSION}")
    fields = set(ModelBundle.__dataclass_fields__)
    missing = fields - set(raw) - {"channel_groups", "provenance", "stride", "semantic"}
    if missing:
        raise HarkdError(f"{path}: harkd model file lacks {sorted(missing)}")
    return ModelBundle(**{k: v for k, v in raw.items() if k in fields})


def bundle_inputs(bundle: ModelBundle, windows: WindowSet, where: str) -> np.ndarray:
    """The bundle's input channels, in its order, from `windows` (raw values)."""
    available = {c.name: i for i, c in enumerate(windows.channels)}
    missing = [name for name in bundle.channel_names if name not in available]
    if missing:
        raise HarkdError(f"{where}: the data has no channel {missing[0]} (of {len(missing)} missing); it has "
                         f"{', '.join(available)}")
    if abs(windows.rate_hz - bundle.rate_hz) > 1e-6:
        raise HarkdError(f"{where}: the data is sampled at {windows.rate_hz:g} Hz, the model expects "
                         f"{bundle.rate_hz:g} Hz")
    index = [available[name] for name in bundle.channel_names]
    return bundle.in_units(windows.x[:, index, :], [windows.channels[i] for i in index], where)
