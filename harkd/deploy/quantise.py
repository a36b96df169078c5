"""int8 for the device: ONNX Runtime's static quantisation (QDQ, weights per channel), calibrated on windows of the
model's own training data, checked against the fp32 graph on held-out windows and scored on the fold's test windows.

The bundle's provenance names its dataset and its fold's test subjects; the windows are cut again as the run cut them
(the bundle's window and stride). Calibration and check windows come from the other subjects (the fold's training
and validation subjects: data the model was fitted on), the score from the test subjects. `calibration` names another
installed dataset to calibrate on instead.

Activation ranges are the 99.999th percentile of the calibration activations, not their extremes: on DSADS a few
extreme training windows stretch MinMax ranges so far that int8 picked fp32's class on only 85% of a fold's test
windows (95% with percentile ranges; benchmarks/results/int8_dsads-cnn_student.json).
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harkd.deploy.bundle import ModelBundle
from harkd.deploy.onnx_export import INPUT
from harkd.errors import HarkdError
from harkd.metrics import macro_f1

CALIBRATION_WINDOWS, CHECK_WINDOWS, BATCH = 512, 256, 64
MIN_AGREEMENT = 0.9  # of held-out windows on which int8 must pick fp32's class, or nothing is written


@dataclass
class QuantisationData:
    """Raw windows in the bundle's channel order."""

    calibration: np.ndarray
    check: np.ndarray  # held out from calibration
    test_x: np.ndarray | None  # the fold's test windows and their targets, when the provenance names them
    test_y: np.ndarray | None
    source: str
    min_agreement: float = MIN_AGREEMENT  # of check windows on which int8 must pick fp32's class


def _bundle_windows(bundle: ModelBundle, dataset: str):
    """The dataset's windows cut as the run cut them, the bundle's channels (raw) and their activity targets."""
    from harkd.data.catalog import default_windowing, load_windows
    from harkd.deploy.bundle import bundle_inputs

    windows = load_windows(dataset, replace(default_windowing(dataset), length=bundle.window, stride=bundle.hop))
    targets, class_names = windows.activity_targets()
    return windows, bundle_inputs(bundle, windows, f"int8 calibration on {dataset}"), targets, class_names


def quantisation_data(bundle: ModelBundle, calibration: str | None = None, seed: int = 0) -> QuantisationData:
    origin = bundle.provenance
    rng = np.random.default_rng(seed)
    test_x = test_y = None
    own = None
    if origin.get("dataset") and origin.get("test_subjects"):
        windows, x, targets, class_names = _bundle_windows(bundle, origin["dataset"])
        if class_names != bundle.class_names:
            raise HarkdError(f"{origin['dataset']}: its classes differ from the model's")
        tested = np.isin(windows.subjects, origin["test_subjects"]) & (targets >= 0)
        test_x, test_y = x[tested], targets[tested]
        own = x[~np.isin(windows.subjects, origin["test_subjects"])]
    elif calibration is None:
        raise HarkdError("int8: the model's provenance names no dataset and test subjects to calibrate on; "
                         "give --calibration DATASET")
    if calibration is None:
        calibration_x, check = _split(own, rng)
        source = f"{origin['dataset']}, subjects other than {', '.join(origin['test_subjects'])} (the fold's training)"
        return QuantisationData(calibration_x, check, test_x, test_y, source)
    calibration_x, check = _split(_bundle_windows(bundle, calibration)[1], rng)
    if own is not None:
        check = own[rng.permutation(len(own))[:CHECK_WINDOWS]]
    return QuantisationData(calibration_x, check, test_x, test_y, calibration)


def _split(pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded calibration and held-out check windows; a small pool gives a quarter to the check."""
    order = rng.permutation(len(pool))
    n_check = min(CHECK_WINDOWS, len(pool) // 4)
    return pool[order[n_check:n_check + CALIBRATION_WINDOWS]], pool[order[:n_check]]


def quantise(fp32: Path, int8: Path, data: QuantisationData) -> dict[str, Any]:
    """Write the int8 graph of `fp32` to `int8` and return the comparison; an int8 graph that agrees with fp32 on
    fewer than `data.min_agreement` of the check windows is an error."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Windows(CalibrationDataReader):
        def __init__(self, x: np.ndarray):
            self.batches = iter([{INPUT: x[i:i + BATCH]} for i in range(0, len(x), BATCH)])

        def get_next(self):
            return next(self.batches, None)

    if len(data.calibration) == 0 or len(data.check) == 0:
        raise HarkdError(f"int8: no windows to calibrate or check on in {data.source}")
    prepared = int8.with_name(f"{int8.name}.prep.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(str(prepared), str(int8), Windows(data.calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.Percentile)
    finally:
        prepared.unlink(missing_ok=True)
    sessions = {"fp32": _session(fp32), "int8": _session(int8)}
    check = {k: _probabilities(s, data.check) for k, s in sessions.items()}
    agreement = float((check["fp32"].argmax(1) == check["int8"].argmax(1)).mean())
    if agreement < data.min_agreement:
        raise HarkdError(f"int8 picks fp32's class on only {agreement:.1%} of {len(data.check)} held-out windows "
                         f"(at least {data.min_agreement:.0%} needed); nothing written")
    report = {
        "calibration": {"windows": len(data.calibration), "source": data.source,
                        "method": "ONNX Runtime quantize_static, QDQ, per-channel int8 weights, int8 activations "
                                  "(ranges: the 99.999th percentile of calibration activations)"},
        "check": {"windows": len(data.check), "agreement": round(agreement, 5),
                  "max_abs_probability_diff": round(float(np.abs(check["fp32"] - check["int8"]).max()), 5)},
        "file_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        "latency_ms_per_window": {k: round(latency_ms(s, data.check[:1]), 4) for k, s in sessions.items()},
    }
    if data.test_x is not None and len(data.test_x):
        scores = {k: macro_f1(data.test_y, _probabilities(s, data.test_x).argmax(1)) for k, s in sessions.items()}
        report["test"] = {"windows": len(data.test_x), "macro_f1_fp32": round(scores["fp32"], 5),
                          "macro_f1_int8": round(scores["int8"], 5),
                          "delta_points": round(100 * (scores["int8"] - scores["fp32"]), 3)}
    return report


def _session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _probabilities(session, x: np.ndarray) -> np.ndarray:
    return np.concatenate([session.run(["probabilities"], {INPUT: x[i:i + 512]})[0]
                           for i in range(0, len(x), 512)])


def latency_ms(session, window: np.ndarray, runs: int = 200, warmup: int = 20) -> float:
    """Median wall time of one call on one window (batch 1)."""
    for _ in range(warmup):
        session.run(["probabilities"], {INPUT: window})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(["probabilities"], {INPUT: window})
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
