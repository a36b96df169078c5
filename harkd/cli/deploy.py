"""`harkd export`, `harkd stream` and `harkd personalise`: from a kept model to the device and the new worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from harkd.cli.app import app
from harkd.errors import HarkdError


@app.command("export", rich_help_panel="Deploy and personalise")
def export(
    model: Path = typer.Argument(..., help="a kept model, e.g. runs/dsads/models/loso-p1-seed0/"
                                           "student-cnn_student-none.pt (from `harkd run`)"),
    out: Path = typer.Option(..., "--out", help="the file to write: .onnx, or .tflite for TensorFlow Lite Micro; its "
                                                "description goes beside it as .json"),
    format: Optional[str] = typer.Option(None, "--format", help="onnx, or tflm (full-integer int8 TFLite for "
                                         "TensorFlow Lite Micro, with a C array and header); default: from --out"),
    tolerance: float = typer.Option(1e-4, help="largest difference allowed between ONNX Runtime's and PyTorch's "
                                               "outputs on the check windows"),
    int8: bool = typer.Option(False, "--int8", help="ONNX: write the int8 graph (QDQ, per-channel weights), "
                              "calibrated on the model's training windows, compared with fp32 (tflm is always int8)"),
    quantisation: str = typer.Option("auto", "--quantisation", help="int8: post-training, quantisation-aware (the "
                                     "model fine-tuned to its fp32 outputs through int8 rounding), or auto (the "
                                     "second when the first picks fp32's class on under 99% of held-out windows)"),
    calibration: Optional[str] = typer.Option(None, "--calibration", help="int8: an installed dataset to calibrate "
                                              "on instead of the model's own training data"),
    budget: Optional[str] = typer.Option(None, "--budget", help="device limits to check, e.g. flash=64KB,ram=16KB "
                                         "(KB = 1024 bytes); tflm: a model over them is an error"),
) -> None:
    """A kept model for the device, written only if the runtime reproduces PyTorch: ONNX (raw sensor windows in,
    normalisation inside, logits and probabilities out; fp32 or int8), or int8 TFLite for TensorFlow Lite Micro,
    checked on TFLM's own kernels, with a C array, a header and the tensor arena TFLM measured. Prints and records
    what it costs a device."""
    from harkd.deploy.budget import parse_budget
    from harkd.models.bundle import load_bundle

    kind = _export_kind(format, out, int8, calibration, quantisation)
    limits = parse_budget(budget)
    quantised = int8 or kind == "tflm"
    bundle = load_bundle(model)
    plan = None
    if quantised:
        from harkd.deploy.quantise import plan_int8, quantisation_data

        plan = plan_int8(bundle, quantisation_data(bundle, calibration), quantisation)
    if kind == "tflm":
        _export_tflm(plan, out, limits)
    else:
        _export_onnx(bundle, plan, out, tolerance, limits)


def _export_kind(format: str | None, out: Path, int8: bool, calibration: str | None, quantisation: str) -> str:
    """onnx or tflm (from --format, else from --out's suffix); int8 options without int8 are an error."""
    kind = format or ("tflm" if out.suffix == ".tflite" else "onnx")
    if kind not in ("onnx", "tflm"):
        raise HarkdError(f"--format {kind!r}: onnx or tflm")
    if not (int8 or kind == "tflm") and (calibration is not None or quantisation != "auto"):
        raise HarkdError("--calibration and --quantisation apply to int8 only (--int8 or --format tflm)")
    return kind


def _model_origin(bundle) -> str:
    """What a kept model is, for one line: its role and method, its fold, and whom it was personalised to."""
    origin = bundle.provenance
    if not origin:
        return bundle.model
    text = f"{bundle.model} ({origin['role']}, {origin['method']}; {origin['dataset']} {origin['fold']} seed " \
           f"{origin['seed']}"
    mine = origin.get("personalised")
    if mine:
        text += f"; personalised to {mine['subject']} on {mine['session']}, {mine['method']}"
    return text + ")"


def _int8_line(q: dict) -> str:
    test = q.get("test")
    return (f"int8 ({q['calibration']['method'].split(':')[0]}): {q['check']['agreement']:.1%} of "
            f"{q['check']['windows']} held-out windows get fp32's class on {q['check']['runtime']}"
            + (f"; macro-F1 fp32 {test['macro_f1_fp32']:.4f}, int8 {test['macro_f1_int8']:.4f} "
               f"({test['delta_points']:+.2f} points) on {test['windows']} windows: {test['scored_on']}"
               if test else ""))


def _export_onnx(bundle, plan, out: Path, tolerance: float, limits: dict) -> None:
    from harkd.deploy.budget import describe
    from harkd.deploy.onnx_export import export_onnx

    spec = export_onnx(bundle, out, tolerance=tolerance, budget=limits, int8=plan)
    names = bundle.channel_names
    channels = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:3])}, ..., {names[-1]} (all in the .json)"
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}: {_model_origin(bundle)}; input (N, {len(names)}, "
               f"{bundle.window}) at {bundle.rate_hz:g} Hz: {channels}; {len(bundle.class_names)} classes; ONNX "
               f"Runtime matches PyTorch to {spec['check']['max_abs_diff']:.1g}")
    if plan is not None:
        q = spec["int8"]
        typer.echo(_int8_line(q) + f"; file {q['file_bytes']['fp32']:,} -> {q['file_bytes']['int8']:,} bytes; "
                   f"latency per window {q['latency_ms_per_window']['fp32']:.3f} -> "
                   f"{q['latency_ms_per_window']['int8']:.3f} ms")
    typer.echo(f"device: {describe(spec['device'])}")


def _export_tflm(plan, out: Path, limits: dict) -> None:
    from harkd.deploy.tflm_export import export_tflm

    spec = export_tflm(plan, out, limits)
    device = spec["device"]
    typer.echo(f"wrote {out}, {out.with_suffix('.cc')}, {out.with_suffix('.h')} and {out.with_suffix('.json')}: "
               f"{_model_origin(plan.bundle)}; input int8 (1, 1, {plan.bundle.window}, {len(plan.bundle.channels)})")
    typer.echo(_int8_line(spec["int8"]))
    typer.echo(f"device: model file {device['file_bytes']:,} bytes (weights {device['weight_bytes']:,}); tensor arena "
               f"{device['arena_bytes']:,} bytes (measured by TFLM); {device['macs_per_window']:,} MACs per window, "
               f"{device['macs_per_second']:,} per second of stream; "
               f"{device['latency_ms_per_window_tflm_python']['p50']:.3f} ms per window on TFLM's reference kernels "
               f"here; ops: {', '.join(spec['resolver'])}")
    for key, limit in limits.items():
        need = device["file_bytes"] if key == "flash" else device["arena_bytes"]
        typer.echo(f"budget {key}: {need:,} of {limit:,} bytes: fits")
    typer.echo("published microcontroller HAR models: " + "; ".join(
        f"{name} {', '.join(f'{k} {v:,} B' for k, v in sizes.items())}" for name, sizes in device["anchors"].items()))


# Over 40 lines with its signature only: a typer command declares each of its options as a parameter.
@app.command("stream", rich_help_panel="Deploy and personalise")
def stream_cmd(
    model: Path = typer.Argument(..., help="a kept model (.pt) or an exported one (.onnx, its .json beside it)"),
    source: str = typer.Option(..., "--input", help="CSV with a time column (seconds) and the model's channels "
                               "by name; a session file of your own data (listed by a dataset.yaml in its folder or "
                               "up to 8 folders above, or see --dataset-yaml); a pipe; or - for stdin"),
    dataset_yaml: Optional[Path] = typer.Option(None, "--dataset-yaml", help="read --input with this dataset.yaml's "
                                                "columns, units and rate, whether it lists the file or not"),
    hop: Optional[int] = typer.Option(None, "--hop", help="samples between predictions (default: the run's stride)"),
    smooth: int = typer.Option(1, "--smooth", help="smooth the class over the last K predictions"),
    smoothing: str = typer.Option("majority", "--smoothing", help="majority (vote) or mean (probabilities)"),
    rate: Optional[float] = typer.Option(None, "--rate", help="the input's rate in Hz (default: from its times)"),
    resample: bool = typer.Option(False, "--resample", help="resample input at another rate to the model's "
                                  "(each run between gaps is scored when it ends)"),
    max_gap_s: float = typer.Option(1.0, "--max-gap-s", help="longest gap (NaN or missing rows) interpolated; a "
                                    "longer one restarts the window"),
    time_column: str = typer.Option("time", "--time-column", help="name of the time column in a plain CSV"),
    realtime: bool = typer.Option(False, "--realtime", help="replay a file at its own rate"),
) -> None:
    """Predict activities on a stream of samples: one JSON line per prediction (start and end time, class,
    probabilities) and per gap, then a summary of activity segments, latency per hop and samples per second; on
    stderr, how the input is read, then the summary. MODEL: a kept model (.pt) or an exported one (.onnx, .tflite)."""
    from harkd.deploy.stream import stream_csv
    from harkd.deploy.stream_model import open_model
    from harkd.deploy.stream_input import choose_reading, plain_format

    predictor = open_model(model)
    path = None if source == "-" else Path(source)
    if path is not None and not path.exists():  # a pipe (/dev/fd/N, a FIFO) is no regular file, but reads as one
        raise HarkdError(f"{path}: input file not found")
    if path is not None and path.is_dir():
        raise HarkdError(f"{path}: a folder; --input takes a CSV file, a pipe or - (standard input)")
    reading = choose_reading(path, predictor, plain_format(predictor, time_column, rate, max_gap_s), dataset_yaml)
    typer.echo(reading.note, err=True)  # stdout carries JSON lines only
    with (sys.stdin if path is None else path.open(encoding="utf-8-sig")) as lines:
        for event in stream_csv(predictor, lines, source if path else "stdin", reading.spec, resample, hop, smooth,
                                smoothing, realtime):
            print(json.dumps(event), flush=True)  # each line out as it is known: an error later loses none
            if event["event"] == "warning":
                typer.echo(f"harkd: warning: {event['message']}", err=True)
    hops = event["latency_ms_per_hop"]
    typer.echo(f"{event['predictions']} predictions, {len(event['segments'])} segments, {event['gaps']} gaps"
               + (f"; latency per hop p50 {hops['p50']:.3f} ms, p99 {hops['p99']:.3f} ms" if hops else "")
               + (f"; {event['samples_per_second']:,} samples/s" if event["samples_per_second"] else ""), err=True)


def _yaml_mapping(text: str, option: str) -> dict:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise HarkdError(f"{option}: not a YAML mapping: {text!r}") from None
    if not isinstance(value, dict):
        raise HarkdError(f"{option}: expected a YAML mapping such as '{{steps: 300}}', got {text!r}")
    return value


# Over 40 lines with its signature only: a typer command declares each of its options as a parameter.
@app.command("personalise", rich_help_panel="Deploy and personalise")
def personalise_cmd(
    student: Path = typer.Argument(..., help="a kept student (from `harkd run --keep-models`)"),
    teacher: Path = typer.Option(..., "--teacher", help="the kept teacher of the same run, fold and seed"),
    dataset: str = typer.Option(..., "--dataset", help="installed dataset holding the new worker's session, with the "
                                                       "teacher's channels"),
    subject: str = typer.Option(..., "--subject", help="the new worker's subject id in that dataset"),
    out: Path = typer.Option(..., "--out", help="the personalised student (a kept-model file, for `harkd export`)"),
    calibration: float = typer.Option(0.5, help="fraction (in time) of each of the worker's recordings the teacher "
                                                "labels; the rest, if labelled, scores before and after"),
    minutes: Optional[float] = typer.Option(None, help="instead of --calibration: the first N minutes of each "
                                            "recording (per activity where a recording holds one)"),
    scored_from: Optional[float] = typer.Option(None, help="score from this fraction of each recording on (default: "
                                                "--calibration), so sessions of several sizes share windows"),
    stride: Optional[int] = typer.Option(None, help="the session windows' hop in samples (default: the run's, "
                                                    "recorded in the kept model); scored windows keep the run's"),
    adapt: str = typer.Option("{}", help="how the student adapts, as YAML (harkd.personalise.adapt), e.g. "
                              "'{steps: 300, replay: 0.5}'; default: the shipped adaptation"),
    method: str = typer.Option("logit", help="KD method on the teacher's labels: a registered strategy (logit, "
                               "sc_logit, attn_rep, tsak_all, ...) or a method mapping in YAML, e.g. "
                               "'{name: m, terms: [{distiller: sc_logit}], mixup: {copies: 2}}'"),
    bounds: bool = typer.Option(False, "--bounds", help="also score the student fine-tuned on its own labels "
                                "(self-training, the lower bound) and on the worker's true labels (the upper bound)"),
    seed: int = typer.Option(0, help="seed of the fine-tuning"),
) -> None:
    """Personalise a kept student to a new worker: the kept teacher labels the worker's calibration session (full
    sensor kit), and the student is distilled on it. The worker's labels are never used for training."""
    import yaml

    from harkd.models.bundle import load_bundle
    from harkd.personalise.adapt import AdaptSpec
    from harkd.personalise.kept import personalise
    from harkd.personalise.session import SessionCut
    from harkd.personalise.tune import DEFAULT_TRAIN, Adaptation
    from harkd.train.methods import MethodSpec

    if out.suffix != ".pt":
        raise HarkdError(f"{out}: the personalised student's file must end in .pt")
    try:
        spec = MethodSpec.parse(yaml.safe_load(method), "--method")
    except yaml.YAMLError:
        raise HarkdError(f"--method: not a method name or a YAML mapping: {method!r}") from None
    how = Adaptation(AdaptSpec(**_yaml_mapping(adapt, "--adapt")), DEFAULT_TRAIN, spec)
    cut = SessionCut(calibration, minutes, stride)
    personal, report = personalise(load_bundle(teacher), load_bundle(student), dataset, subject, cut, how,
                                   seed=seed, bounds=bounds, scored_from=scored_from)
    personal.save(out)
    _print_personalised(out, subject, report)


def _print_personalised(out: Path, subject: str, report: dict) -> None:
    """What `harkd personalise` did: the session, the guard's verdict, the scores before and after and the bounds."""
    before, after = report["before"], report["after"]
    typer.echo(f"wrote {out}: {report['calibration_windows']} calibration windows of {subject} ({report['session']}) "
               f"labelled by the teacher; agreement with the teacher on them "
               f"{before['agreement_with_teacher']:.3f} -> {after['agreement_with_teacher']:.3f}")
    typer.echo(f"guard: {report['guard']['why']}")
    for line in report["warnings"]:
        typer.echo(f"harkd: warning: {line}", err=True)
    if after["student_macro_f1"] is not None:
        typer.echo(f"on the other {report['scored_windows']} windows (labelled): student macro-F1 "
                   f"{before['student_macro_f1']:.3f} -> {after['student_macro_f1']:.3f}, teacher "
                   f"{after['teacher_macro_f1']:.3f}")
    for source, scores in report.get("bounds", {}).items():
        said = "not scored (too few labelled windows)" if scores is None or scores["student_macro_f1"] is None \
            else f"{scores['student_macro_f1']:.3f}"
        typer.echo(f"bound, fine-tuned on {'its own' if source == 'self' else 'the true'} labels: {said}")
    if after["student_macro_f1"] is None:
        typer.echo("the rest of the session has no labels: nothing scored")
