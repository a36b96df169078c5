"""A model bundle as ONNX for the device: it takes raw sensor windows (the bundle's normalisation is part of the graph)
and returns logits and class probabilities. ONNX Runtime must reproduce PyTorch's outputs before the file is kept,
and a JSON file beside it says what the input is (channels in order, units, window, rate, stride), what the classes
are and what the model costs a device (harkd.deploy.budget). With int8, the file holds the int8 program of the plan
(harkd.deploy.quantise) as a QDQ graph (harkd.deploy.onnx_int8) and the JSON its comparison with fp32.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harkd import __version__
from harkd.cost import count_flops
from harkd.deploy.budget import device_budget
from harkd.models.bundle import ModelBundle
from harkd.deploy.onnx_int8 import int8_onnx
from harkd.deploy.quantise import Int8Plan, compare, latency_ms
from harkd.errors import HarkdError
from harkd.files import atomic_output

INPUT, OUTPUTS = "windows", ("logits", "probabilities")


class Deployable(nn.Module):
    """Raw windows in, (logits, probabilities) out."""

    def __init__(self, bundle: ModelBundle):
        super().__init__()
        self.model = bundle.build()
        self.register_buffer("mean", torch.tensor(bundle.mean, dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.tensor(bundle.std, dtype=torch.float32).view(1, -1, 1))

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model((windows - self.mean) / self.std).logits
        return logits, torch.softmax(logits, dim=1)


def _raw_like(bundle: ModelBundle, n: int, seed: int) -> torch.Tensor:
    """Windows on the scale of the training data: its mean plus its spread times Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, len(bundle.channels), bundle.window, generator=g)
    return torch.tensor(bundle.mean).view(1, -1, 1) + torch.tensor(bundle.std).view(1, -1, 1) * noise


def to_onnx(module: nn.Module, example: torch.Tensor, path: Path, output_names: tuple[str, ...] = OUTPUTS) -> None:
    """`module` (one input tensor in, tensors out) through torch.onnx's exporter with a dynamic batch size, its
    progress lines and warnings kept off the terminal."""
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [log.level for log in quiet]
    try:
        for log in quiet:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=[INPUT],
                                        output_names=list(output_names), verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            program.save(str(path))
    except Exception as exc:  # the exporter raises many types; the user needs the model and the first line
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise HarkdError(f"ONNX export of {getattr(module, 'model', module).__class__.__name__} failed: "
                         f"{type(exc).__name__}: {first_line}") from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


def sidecar(path: Path) -> Path:
    """The .json beside an exported model; one that describes another file (an ONNX and a TFLite export of one name)
    is an error, not overwritten."""
    described = path.with_suffix(".json")
    if described.is_file():
        try:
            spec = json.loads(described.read_text())
            other = spec.get("onnx") or spec.get("tflite")
        except (ValueError, AttributeError):
            other = None
        if other is not None and other != path.name:
            raise HarkdError(f"{described} describes {other}; export {path.name} under another name (e.g. "
                             f"{path.stem}-{path.suffix.lstrip('.')}{path.suffix})")
    return described


def export_onnx(bundle: ModelBundle, path: Path, tolerance: float = 1e-4, check_windows: int = 64,
                seed: int = 0, budget: dict[str, int] | None = None, int8: Int8Plan | None = None
                ) -> dict[str, Any]:
    """Write `path` (ONNX) and `path` with suffix .json (its input and output description, with the device budget);
    return that description. With an `int8` plan, `path` is its int8 graph, compared with fp32 on the plan's windows.

    The check: ONNX Runtime and PyTorch score `check_windows` random windows on the training data's scale (another
    batch size than the export's, so the dynamic batch axis is exercised too); if any probability or logit differs
    by more than `tolerance`, nothing is written and the error says by how much.
    """
    import onnx

    path = Path(path)
    if path.suffix != ".onnx":
        raise HarkdError(f"{path}: the output file must end in .onnx")
    module = Deployable(bundle).eval()
    with atomic_output(path) as tmp, atomic_output(sidecar(path)) as tmp_json:
        fp32 = tmp.with_name(tmp.name + ".fp32") if int8 is not None else tmp
        try:
            diff = _write_checked(module, bundle, fp32, path, tolerance, check_windows, seed)
            quantised = _write_int8(int8, fp32, tmp) if int8 is not None else None
            macs = count_flops(module.model, (1, len(bundle.channels), bundle.window)) // 2
            device = device_budget(onnx.load(fp32), macs, bundle.rate_hz / bundle.hop,
                                   onnx.load(tmp) if int8 is not None else None, budget)
        finally:
            if int8 is not None:
                fp32.unlink(missing_ok=True)
        spec = _describe(bundle, path, diff, tolerance, check_windows)
        spec.update({"precision": "int8" if int8 is not None else "fp32", "device": device})
        if quantised is not None:
            spec["int8"] = quantised
        tmp_json.write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _write_int8(plan: Int8Plan, fp32: Path, path: Path) -> dict[str, Any]:
    """The plan's int8 program as QDQ ONNX at `path`, compared with the fp32 graph at `fp32` in ONNX Runtime."""
    import onnx

    bundle = plan.bundle
    onnx.save(int8_onnx(plan.program, bundle.mean, bundle.std, bundle.window), str(path))
    sessions = {"fp32": ort_session(fp32), "int8": ort_session(path)}
    report = compare(plan, lambda x: ort_probabilities(sessions["fp32"], x),
                     lambda x: ort_probabilities(sessions["int8"], x), "ONNX Runtime")
    one = plan.data.check[:1]
    timing = {k: latency_ms(lambda s=s: s.run(["probabilities"], {INPUT: one})) for k, s in sessions.items()}
    report.update({"file_bytes": {"fp32": fp32.stat().st_size, "int8": path.stat().st_size},
                   "latency_ms_per_window": {k: t["p50"] for k, t in timing.items()},
                   "latency_ms_p99": {k: t["p99"] for k, t in timing.items()}})
    return report


def ort_session(path: Path):
    """ONNX Runtime on one thread (one process per core is how harkd measures)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_probabilities(session, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(["probabilities"], {INPUT: x[i:i + 512]})[0]
                           for i in range(0, len(x), 512)])


def _write_checked(module: Deployable, bundle: ModelBundle, path: Path, shown: Path, tolerance: float,
                   check_windows: int, seed: int) -> float:
    """Export to `path` and return ONNX Runtime's largest difference from PyTorch; beyond `tolerance`, an error."""
    import onnxruntime

    to_onnx(module, _raw_like(bundle, 2, seed), path)
    windows = _raw_like(bundle, check_windows, seed + 1)
    with torch.no_grad():
        expected = [t.numpy() for t in module(windows)]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {INPUT: windows.numpy()})
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if not diff <= tolerance:
        raise HarkdError(f"{shown}: ONNX Runtime's outputs differ from PyTorch's by {diff:.3g} "
                         f"(tolerance {tolerance:g}); nothing written")
    return diff


def _describe(bundle: ModelBundle, path: Path, diff: float, tolerance: float, check_windows: int) -> dict[str, Any]:
    import onnxruntime

    return {
        "format": "harkd-onnx", "harkd_version": __version__, "onnx": path.name,
        "input": {"name": INPUT, "shape": ["N", len(bundle.channels), bundle.window], "dtype": "float32",
                  "units": "raw sensor values, as the dataset's loader reads them; normalisation is inside",
                  "channels": [{"name": name, **c} for name, c in zip(bundle.channel_names, bundle.channels)],
                  "rate_hz": bundle.rate_hz, "stride": bundle.hop},
        "outputs": {"logits": ["N", len(bundle.class_names)], "probabilities": ["N", len(bundle.class_names)]},
        "class_names": bundle.class_names, "model": bundle.model, "params": bundle.params,
        "provenance": bundle.provenance,
        "check": {"windows": check_windows, "max_abs_diff": diff, "tolerance": tolerance,
                  "onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
    }
