"""A model as `harkd stream` runs it, whatever its file: a kept model (PyTorch), an exported ONNX file with its .json
sidecar (ONNX Runtime) or an exported TFLite file with its .json (TensorFlow Lite Micro's own kernels, one window per
call as on the device); each scores raw windows in the model's channels and units."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harkd.data.recording import ChannelSpec
from harkd.errors import HarkdError

Scorer = Callable[[np.ndarray], np.ndarray]  # raw windows (N, channels, window) -> probabilities (N, classes)


@dataclass
class StreamModel:
    """What streaming needs of a model: its input (channels, window, rate), classes, hop and a scorer."""

    channels: list[dict[str, str]]
    class_names: list[str]
    window: int
    rate_hz: float
    hop: int
    score: Scorer
    source: str

    @property
    def specs(self) -> list[ChannelSpec]:
        return [ChannelSpec(**{k: v for k, v in c.items() if k != "name"}) for c in self.channels]

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.specs]


def open_model(path: Path, threads: int = 1) -> StreamModel:
    """A kept model (.pt, scored by PyTorch) or an exported one (.onnx or .tflite beside its .json, scored by ONNX
    Runtime or TFLite Micro), scoring with `threads` threads (for PyTorch that is the whole process's setting): one
    window at a time, more threads only wait on each other."""
    path = Path(path)
    if path.suffix == ".tflite":
        return _tflm_model(path)
    return _onnx_model(path, threads) if path.suffix == ".onnx" else _torch_model(path, threads)


def _torch_model(path: Path, threads: int) -> StreamModel:
    import torch

    torch.set_num_threads(threads)

    from harkd.models.bundle import load_bundle
    from harkd.deploy.onnx_export import Deployable

    bundle = load_bundle(path)
    module = Deployable(bundle).eval()

    @torch.no_grad()
    def score(windows: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(np.ascontiguousarray(windows, np.float32)))[1].numpy()

    return StreamModel(bundle.channels, bundle.class_names, bundle.window, bundle.rate_hz, bundle.hop, score,
                       str(path))


def _description(path: Path) -> tuple[dict, list, float, int, list[str]]:
    """An exported model's .json: the whole of it, and its channels, rate, window and classes (the window is axis 2
    of the input shape in both formats: ONNX's (N, C, T) and TFLite's (1, 1, T, C))."""
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        raise HarkdError(f"{path}: model file not found")
    try:
        spec = json.loads(sidecar.read_text())
        return (spec, spec["input"]["channels"], float(spec["input"]["rate_hz"]),
                int(spec["input"]["shape"][2]), list(spec["class_names"]))
    except FileNotFoundError:
        raise HarkdError(f"{path}: its description {sidecar.name} is missing (harkd export writes both)") from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise HarkdError(f"{sidecar}: not a harkd export description ({type(exc).__name__}: {exc})") from None


def _tflm_model(path: Path) -> StreamModel:
    """Raw windows normalised and quantised as the firmware does (the .json's mean, std and input grid), scored on
    TFLM's kernels; probabilities from the int8 logits."""
    from scipy.special import softmax

    from harkd.deploy.int8 import QParams
    from harkd.deploy.tflm import TflmRunner

    spec, channels, rate_hz, window, classes = _description(path)
    try:
        grid = QParams(float(spec["input"]["scale"]), int(spec["input"]["zero_point"]))
        logits = QParams(float(spec["outputs"]["logits"]["scale"]), int(spec["outputs"]["logits"]["zero_point"]))
        mean, std = (np.asarray(spec["input"][k], np.float32)[:, None] for k in ("mean", "std"))
        arena = int(spec["device"]["arena_bytes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HarkdError(f"{path.with_suffix('.json')}: not a harkd TFLM description ({type(exc).__name__}: {exc})") \
            from None
    runner = TflmRunner(path.read_bytes(), grid, logits, arena)

    def score(windows: np.ndarray) -> np.ndarray:
        return softmax(runner.logits(((windows - mean) / std).astype(np.float32)), axis=1)

    return StreamModel(channels, classes, window, rate_hz, int(spec["input"].get("stride") or window), score,
                       str(path))


def _onnx_model(path: Path, threads: int) -> StreamModel:
    import onnxruntime

    spec, channels, rate_hz, window, classes = _description(path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own types for unreadable graphs
        raise HarkdError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__})") from None
    name = session.get_inputs()[0].name

    def score(windows: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {name: np.ascontiguousarray(windows, np.float32)})[0]

    return StreamModel(channels, classes, window, rate_hz, int(spec["input"].get("stride") or window), score,
                       str(path))
