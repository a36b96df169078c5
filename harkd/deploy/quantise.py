"""int8 for the device: which windows calibrate, check and score a kept model's int8 form, and how that form is found
(harkd.deploy.int8): post-training, or quantisation-aware fine-tuning when post-training int8 strays from fp32.

The bundle's provenance names its dataset and its fold's test subjects; the windows are cut again as the run cut them
(the bundle's window and stride), their labels mapped onto the model's classes by name. Calibration and check windows
come from the other subjects (the fold's training and validation subjects: data the model was fitted on), the score
from the test subjects. A personalised model is scored only on its worker's windows it never trained on (the part of
each recording after the calibration session, as the run scored it), and its worker's windows never calibrate.
`calibration` names another installed dataset to calibrate on instead.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from harkd.models.bundle import ModelBundle, bundle_inputs
from harkd.deploy.int8 import Int8Program, post_training, quantisation_aware
from harkd.deploy.lowering import lower
from harkd.errors import HarkdError
from harkd.metrics import macro_f1

CALIBRATION_WINDOWS, CHECK_WINDOWS = 512, 1024
MIN_AGREEMENT = 0.9  # of held-out windows on which int8 must pick fp32's class, or nothing is written
QAT_BELOW = 0.99  # "auto": fine-tune quantisation-aware when post-training int8 agrees with fp32 on fewer
QAT_MARGIN = 0.005  # and keep it only when it agrees on this much more of the check windows
METHODS = ("auto", "post-training", "quantisation-aware")


@dataclass
class QuantisationData:
    """Raw windows in the bundle's channel order."""

    calibration: np.ndarray
    check: np.ndarray  # held out from calibration
    pool: np.ndarray  # every window that may calibrate (the check windows excepted): what QAT fine-tunes on
    test_x: np.ndarray | None  # the windows the model is scored on and their targets, when the provenance names them
    test_y: np.ndarray | None
    source: str
    test_source: str = ""
    min_agreement: float = MIN_AGREEMENT  # of check windows on which int8 must pick fp32's class


def _bundle_windows(bundle: ModelBundle, dataset: str):
    """The dataset's windows cut as the run cut them, the bundle's channels (raw) and targets as its classes; with
    the run's fold (None for a dataset the model was not trained on, or a model kept before runs recorded their data
    sections)."""
    from harkd.data.catalog import default_windowing, load_windows

    run = bundle.provenance.get("data")
    if run is not None and run.get("dataset") == dataset:
        windows, fold = _run_windows(bundle, run)
    else:
        windows = load_windows(dataset, replace(default_windowing(dataset), length=bundle.window, stride=bundle.hop))
        fold = None
    targets = windows.targets_for(bundle.class_names)
    if not (targets >= 0).any():
        raise HarkdError(f"{dataset}: none of its classes is one of the model's ({', '.join(bundle.class_names)})")
    return windows, bundle_inputs(bundle, windows, f"int8 calibration on {dataset}"), targets, fold


def _run_windows(bundle: ModelBundle, run: dict):
    """The run's windows and the bundle's fold, rebuilt from the data sections the run recorded (its dataset
    options, windowing and split: group and protocol splits too)."""
    from harkd.experiment.config import DataSections
    from harkd.experiment.folds import experiment_windows, make_folds
    from harkd.schema import validate

    settings = validate(DataSections, run, "the kept model's run")
    windows, protocol_subjects, _ = experiment_windows(settings)
    origin = bundle.provenance
    folds = [f for f in make_folds(windows, settings.split, origin.get("seed", 0), protocol_subjects)
             if f.name == origin.get("fold")]
    if not folds:
        raise HarkdError(f"int8: the run's split has no fold {origin.get('fold')!r} any more")
    return windows, folds[0]


def _scored(bundle: ModelBundle, windows, fold) -> tuple[np.ndarray, np.ndarray, str]:
    """Which windows score the model, which may calibrate it (the fold's training and validation windows), and
    what the scored ones are."""
    origin = bundle.provenance
    personalised = origin.get("personalised")
    n = len(windows.subjects)
    if fold is not None:
        trained = np.zeros(n, bool)
        trained[np.concatenate([fold.train, fold.val])] = True
    if personalised is None:
        if fold is not None:
            tested = np.zeros(n, bool)
            tested[fold.test] = True
            return tested, trained, f"the test windows of {fold.name} ({', '.join(fold.test_subjects)})"
        tested = np.isin(windows.subjects, origin["test_subjects"])
        return tested, ~tested, f"the fold's test subjects ({', '.join(origin['test_subjects'])})"
    from harkd.personalise.session import scored_fold

    subject, scored = personalised["subject"], personalised.get("scored")
    if scored is None:
        raise HarkdError("int8: this personalised model does not record which of its worker's windows it never "
                         "trained on; personalise it again with this harkd")
    tested = np.zeros(n, bool)
    tested[scored_fold(windows, subject, scored["from"], scored["protocol"]).test] = True
    if fold is None:
        trained = ~np.isin(windows.subjects, [subject, *origin.get("test_subjects", ())])
    return tested, trained & (windows.subjects != subject), (
        f"worker {subject}'s windows after the calibration session (from {scored['from']:g} of each recording, "
        f"{scored['protocol']})")


def quantisation_data(bundle: ModelBundle, calibration: str | None = None, seed: int = 0) -> QuantisationData:
    origin = bundle.provenance
    rng = np.random.default_rng(seed)
    test_x = test_y = own = None
    test_source = ""
    if origin.get("dataset") and (origin.get("test_subjects") or origin.get("personalised")):
        windows, x, targets, fold = _bundle_windows(bundle, origin["dataset"])
        tested, calibrates, test_source = _scored(bundle, windows, fold)
        tested &= targets >= 0
        test_x, test_y, own = x[tested], targets[tested], x[calibrates]
    elif calibration is None:
        raise HarkdError("int8: the model's provenance names no dataset and test subjects to calibrate on; "
                         "give --calibration DATASET")
    if calibration is None:
        calibration_x, check, pool = _split(own, rng)
        source = f"{origin['dataset']}, the model's training windows"
        return QuantisationData(calibration_x, check, pool, test_x, test_y, source, test_source)
    calibration_x, check, pool = _split(_bundle_windows(bundle, calibration)[1], rng)
    if own is not None:
        check = own[rng.permutation(len(own))[:CHECK_WINDOWS]]
    return QuantisationData(calibration_x, check, pool, test_x, test_y, calibration, test_source)


def _split(pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded calibration windows, held-out check windows and the rest; a small pool gives a quarter to the
    check."""
    order = rng.permutation(len(pool))
    n_check = min(CHECK_WINDOWS, len(pool) // 4)
    rest = pool[order[n_check:]]
    return rest[:CALIBRATION_WINDOWS], pool[order[:n_check]], rest


@dataclass
class Int8Plan:
    """A bundle's int8 form and the windows it answers to; `tried` is each method's agreement with fp32 on the
    check windows (the int8 arithmetic simulated)."""

    bundle: ModelBundle
    data: QuantisationData
    program: Int8Program
    tried: dict[str, float] = field(default_factory=dict)


def plan_int8(bundle: ModelBundle, data: QuantisationData, method: str = "auto") -> Int8Plan:
    """Post-training int8, and quantisation-aware when asked or (auto) when post-training agrees with fp32 on fewer
    than QAT_BELOW of the check windows; auto keeps it only when it agrees on QAT_MARGIN more of them."""
    if method not in METHODS:
        raise HarkdError(f"--quantisation {method!r}: one of {', '.join(METHODS)}")
    if len(data.calibration) == 0 or len(data.check) == 0:
        raise HarkdError(f"int8: no windows to calibrate or check on in {data.source}")
    program = lower(bundle.build(), bundle.model)
    calibration, check = bundle.normalise(data.calibration), bundle.normalise(data.check)
    pool = bundle.normalise(data.pool)
    fp32 = _classes(program.eval(), check)
    agreement = lambda q: float((q.logits(check).argmax(1) == fp32).mean())  # noqa: E731
    tried, best = {}, None
    if method != "quantisation-aware":
        best = post_training(program, calibration)
        tried[best.method] = agreement(best)
    if method == "quantisation-aware" or (method == "auto" and tried[best.method] < QAT_BELOW):
        aware = quantisation_aware(program, calibration, pool)
        tried[aware.method] = agreement(aware)
        best = aware if best is None or tried[aware.method] > tried[best.method] + QAT_MARGIN else best
    return Int8Plan(bundle, data, best, tried)


def _classes(program, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return program(torch.from_numpy(x))[program.logits].squeeze(-1).argmax(1).numpy()


def compare(plan: Int8Plan, fp32: Callable[[np.ndarray], np.ndarray], int8: Callable[[np.ndarray], np.ndarray],
            runtime: str) -> dict[str, Any]:
    """int8 against fp32 (each: raw windows -> class scores) on the check windows (an error below the plan's
    min_agreement, so nothing is written) and, where the plan has them, on the scored windows."""
    data = plan.data
    check = {"fp32": fp32(data.check), "int8": int8(data.check)}
    agreement = float((check["fp32"].argmax(1) == check["int8"].argmax(1)).mean())
    if agreement < data.min_agreement:
        raise HarkdError(f"int8 on {runtime} picks fp32's class on only {agreement:.1%} of {len(data.check)} "
                         f"held-out windows (at least {data.min_agreement:.0%} needed); nothing written")
    report: dict[str, Any] = {
        "calibration": {"windows": len(data.calibration), "source": data.source,
                        "method": f"{plan.program.method}: int8 activations per tensor (each range clipped where "
                                  f"the class distribution comes closest to fp32's), int8 weights per output channel "
                                  f"(dense layers per tensor)",
                        "agreement_by_method": {k: round(v, 5) for k, v in plan.tried.items()}},
        "check": {"windows": len(data.check), "agreement": round(agreement, 5), "runtime": runtime},
    }
    if data.test_x is not None and len(data.test_x):
        scores = {"fp32": macro_f1(data.test_y, fp32(data.test_x).argmax(1)),
                  "int8": macro_f1(data.test_y, int8(data.test_x).argmax(1))}
        report["test"] = {"windows": len(data.test_x), "scored_on": data.test_source,
                          "macro_f1_fp32": round(scores["fp32"], 5), "macro_f1_int8": round(scores["int8"], 5),
                          "delta_points": round(100 * (scores["int8"] - scores["fp32"]), 3)}
    return report


def latency_ms(call: Callable[[], Any], runs: int = 200, warmup: int = 20) -> dict[str, float]:
    """Median and 99th-percentile wall time of `call` (one window, batch 1), in ms."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return {"p50": round(statistics.median(times), 4), "p99": round(float(np.percentile(times, 99)), 4)}
