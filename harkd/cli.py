"""The `harkd` command line. User errors print one line and exit 2; everything else is a bug and keeps its trace."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from harkd.errors import HarkdError

if TYPE_CHECKING:
    from harkd.data.check import CheckReport

app = typer.Typer(help="Knowledge distillation for wearable human activity recognition.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Install and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("install")
def data_install(
    name: Optional[str] = typer.Argument(None, help="dataset name: dsads, hapt, openpack, or a name for your own "
                                         "data (default: the name in its dataset.yaml, or the known archive's)"),
    source: str = typer.Option(..., "--from", help="archive file or URL (the publisher's download or ours), or a "
                               "folder in the generic format"),
    sha256: Optional[str] = typer.Option(None, help="expected sha256 of an archive (default: SHA256SUMS beside it, "
                                                    "or the checksum harkd knows for it)"),
    force: bool = typer.Option(False, help="replace an installed copy"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="name each step on stderr as it "
                                            "starts (default: when stderr is a terminal, which also shows bars)"),
) -> None:
    """Verify an archive's checksum, check from its listing that it holds the dataset's layout, unpack it into the
    data root (HARKD_DATA or the user cache) and read every file once; a folder in the generic format is read where
    it is and copied in."""
    from harkd.data.install import install_dataset

    show = sys.stderr.isatty() if progress is None else progress
    path, fresh = install_dataset(name, source, sha256=sha256, force=force,
                                  log=(lambda line: typer.echo(line, err=True)) if show else lambda _: None)
    typer.echo(f"installed {path.name} at {path}" if fresh else f"{path.name} is already installed at {path} "
               f"from the same {'folder' if Path(source).is_dir() else 'archive'}")


@data_app.command("check")
def data_check(
    source: str = typer.Argument(..., help="a folder holding dataset.yaml (or its parent), or an archive of one"),
    windowing: Optional[str] = typer.Option(None, help="windows to count, in samples: length=100,stride=50 "
                                            "(default: 2 s windows with 50% overlap)"),
    strict: bool = typer.Option(False, "--strict", help="treat warnings (numbers that do not fit their unit, files "
                                "not read, copied sessions, misspelt or tiny classes) as errors"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Read your own dataset where it is, as `data install` would, and print what `data info` would; every problem
    is one line on stderr naming your file (and row), and any problem exits with status 2. Warnings name what reads
    without error but is likely not meant, and how to fix it; with --strict they exit with status 2 too."""
    from harkd.data.check import check_dataset, parse_windowing

    report = check_dataset(source, parse_windowing(windowing))
    failed = bool(report.problems or (strict and report.warnings))
    if as_json:
        typer.echo(json.dumps({"folder": report.folder, "problems": report.problems, "warnings": report.warnings,
                               "class_order": report.class_order, "info": report.info}, indent=2))
        raise typer.Exit(2 if failed else 0)
    if report.info is not None:
        _print_check_info(report)
    for line in report.problems:
        typer.echo(f"harkd: error: {line}", err=True)
    for line in report.warnings:
        typer.echo(f"harkd: {'error' if strict else 'warning'}: {line}", err=True)
    if failed:
        raise typer.Exit(2)
    typer.echo(f"{report.folder}: no problems" + (f", {len(report.warnings)} warnings" if report.warnings else ""))


def _print_check_info(report: CheckReport) -> None:
    from collections import Counter

    _print_info({"name": report.folder, "path": None, "licence": None, **report.info})
    typer.echo(f"  class order: {report.class_order}")
    converted = Counter((given, stored) for _, given, stored in report.info["declared_units"] if given != stored)
    if converted:
        typer.echo("  converted at load time: " + ", ".join(f"{given} -> {stored} ({n} channels)"
                                                             for (given, stored), n in converted.items()))


@data_app.command("list")
def data_list(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Installed datasets and the names harkd can load."""
    from harkd.data.install import data_root, installed_datasets
    from harkd.data.registry import dataset_names, get_dataset

    installed = installed_datasets()
    if as_json:
        typer.echo(json.dumps({"data_root": str(data_root()), "installed": installed,
                               "known": dataset_names()}, indent=2))
        return
    typer.echo(f"data root: {data_root()}")
    names = {r["name"] for r in installed}
    for record in installed:
        typer.echo(f"  {record['name']:<12} installed {record['installed_at']}  from {record['archive']}")
    for name in dataset_names():
        if name not in names:
            typer.echo(f"  {name:<12} not installed  ({get_dataset(name).title})")


@data_app.command("info")
def data_info(
    name: str = typer.Argument(..., help="an installed dataset"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    protocol: Optional[str] = typer.Option(None, help="also count windows per split of a published protocol "
                                                      "(uci-har, on hapt)"),
) -> None:
    """Subjects, classes with counts, channels, duration and windows of an installed dataset."""
    from harkd.data.catalog import load_recordings, summarise
    from harkd.data.protocols import get_protocol, protocol_counts

    if protocol is not None:
        get_protocol(protocol, dataset=name)
    info = summarise(name)
    if protocol is not None:
        info["protocol"] = {"name": protocol, "splits": protocol_counts(protocol, load_recordings(name))}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    _print_info(info)
    if "protocol" in info:
        for split, counts in info["protocol"]["splits"].items():
            typer.echo(f"  {protocol} {split}: {counts['windows']} windows from {counts['subjects']} subjects "
                       f"(original release: {counts['original_windows']})")


@data_app.command("csv")
def data_csv(
    name: str = typer.Argument(..., help="an installed dataset"),
    subject: str = typer.Option(..., "--subject", help="whose recordings"),
    out: Path = typer.Option(..., "--out", help="the CSV to write (time, one column per channel, label)"),
    channels: Optional[str] = typer.Option(None, "--channels", help="which channels, e.g. "
                                           "'position=right_arm;modality=acc' (default: all)"),
    scored_from: float = typer.Option(0.0, "--from", help="start each recording at this fraction of its windows "
                                      "(0.5: the part a run's personalised student is scored on)"),
) -> None:
    """A subject's recordings as the CSV `harkd stream` reads, one after another with time running on."""
    from harkd.data.catalog import default_windowing, load_recordings
    from harkd.data.stream_csv import write_stream_csv
    from harkd.personalise.session import scored_recordings

    parts = scored_recordings(load_recordings(name), subject, default_windowing(name), scored_from)
    samples = write_stream_csv(parts, out, channels)
    typer.echo(f"wrote {out}: {samples:,} samples of {subject} ({samples / parts[0].rate_hz / 60:.1f} min at "
               f"{parts[0].rate_hz:g} Hz) from {len(parts)} recordings")


def _print_info(info: dict) -> None:
    """What `data info` and `data check` print of a dataset (catalog.describe's fields)."""
    typer.echo(info["name"] + (f"  ({info['path']})" if info["path"] else "")
               + (f"  licence {info['licence']}" if info["licence"] else ""))
    typer.echo(f"  {info['recordings']} recordings, {info['n_subjects']} subjects, "
               f"{info['duration_s'] / 3600:.2f} h at {info['rate_hz']:g} Hz, "
               f"{info['labelled_segments']} labelled segments")
    typer.echo(f"  subjects: {', '.join(s['subject'] for s in info['subjects'])}")
    typer.echo(f"  {info['n_channels']} channels: positions {', '.join(info['positions'])}; "
               f"modalities {', '.join(info['modalities'])}" +
               (f"; sensors {', '.join(info['sensors'])}" if info["sensors"] else ""))
    typer.echo("  units: " + "; ".join(f"{m} {', '.join(u or 'none' for u in units)}"
                                       for m, units in info["units"].items()))
    w = info["windowing"]
    typer.echo(f"  {info['windows']} windows (length {w['length']}, stride {w['stride']}, {w['label_rule']} label"
               f"{', Null dropped' if w['drop_null'] else ''})")
    typer.echo(f"  {info['n_classes']} classes" + (f" + {info['null_class']}" if info["null_class"] else "") + ":")
    for c in info["classes"]:
        typer.echo(f"    {c['name']:<32} {c['samples']:>10} samples {c['windows']:>8} windows")
    if info["interpolated_samples"]:
        typer.echo(f"  {info['interpolated_samples']} missing values were interpolated (short NaN gaps)")


@app.command("run", context_settings={"allow_extra_args": False})
def run(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. seeds=[0] "
                                                               "teacher.train.epochs=5 split.folds=[p1]"),
    out: Path = typer.Option(Path("runs/latest"), "--out", help="folder for results.json and report.md; finished "
                             "units wait in OUT/.units/, so rerunning an interrupted command resumes it"),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="train this many (seed, fold) units at once, each in its "
                                       "own process (default: one per CPU core, at most one per unit)"),
    keep_models: bool = typer.Option(False, "--keep-models", help="keep every trained teacher and student in "
                                     "OUT/models/<fold>-seed<seed>/ (for `harkd export`)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads per process (default 1: more "
                                          "collapse when the machine is shared); recorded in results.json"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in OUT (without it, a "
                                   "results.json there is an error)"),
    print_config: bool = typer.Option(False, "--print-config", help="print the config with every default filled "
                                      "in, as YAML, and exit without training"),
    backend: str = typer.Option("local", "--backend", help="local (worker processes, see --jobs) or ray: each "
                                "(seed, fold) unit a task on a Ray cluster (pip install 'harkd\\[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="with --backend ray: HOST:PORT of the cluster's "
                                          "head (default: a Ray instance on this machine, 127.0.0.1 only)"),
    cpus_per_unit: Optional[float] = typer.Option(None, "--cpus-per-unit", help="with --backend ray: CPUs each unit "
                                                  "holds (default 1; fractions allowed)"),
    gpus_per_unit: Optional[float] = typer.Option(None, "--gpus-per-unit", help="with --backend ray: GPUs each unit "
                                                  "holds (default 0; fractions allowed)"),
) -> None:
    """Train teacher, semantic classifier and students with each KD method over folds and seeds."""
    from harkd.experiment.config import experiment_yaml, load_config, read_config
    from harkd.experiment.ray_backend import RayBackend
    from harkd.experiment.runner import run_experiment

    if print_config:
        typer.echo(experiment_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    ray = RayBackend.from_options(backend, address, cpus_per_unit, gpus_per_unit)
    cfg = load_config(config, overrides or [])
    command = " ".join(["harkd", "run", str(config), *(overrides or []), "--out", str(out)]
                       + (["--jobs", str(jobs)] if jobs is not None else [])
                       + (["--keep-models"] if keep_models else [])
                       + (["--threads", str(threads)] if threads is not None else [])
                       + (ray.cli_options("unit") if ray else []))
    run_experiment(cfg, out, command, log=lambda line: typer.echo(line, err=True), jobs=jobs, keep_models=keep_models,
                   threads=threads, overwrite=overwrite, ray=ray)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")


@app.command("export")
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


@app.command("stream")
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


@app.command("personalise")
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


@app.command("methods")
def methods(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every KD strategy a method's terms may name, with its family (tsak, zoo, smldist or none), its one-line
    summary and its options' defaults."""
    from harkd.distill import distiller_defaults, distiller_family, distiller_names, distiller_summary

    listing = {name: {"family": distiller_family(name), "summary": distiller_summary(name),
                      "options": distiller_defaults(name)} for name in distiller_names()}
    if as_json:
        typer.echo(json.dumps(listing, indent=2))
        return
    for name, entry in listing.items():
        typer.echo(f"{name:<12} {entry['family']:<8} {entry['summary']}")
        typer.echo(f"{'':<21} " + " ".join(f"{k}={v}" for k, v in entry["options"].items()))


# Options of both searches (search-head, search-sensors); with Ray, each trial is a task sharing the study's storage.
SEARCH_STORAGE = typer.Option(None, "--storage", help="Optuna storage URL shared by every process and machine "
                              "(default: sqlite:///OUT/search.db)")
SEARCH_PRINT_CONFIG = typer.Option(False, "--print-config", help="print the config with every default filled in, as "
                                   "YAML, and exit without searching")
TRIALS_BACKEND = typer.Option("local", "--backend", help="local (this machine) or ray: each trial a task on a Ray "
                              "cluster, sharing the study's storage (pip install 'harkd\\[ray]')")
TRIALS_ADDRESS = typer.Option(None, "--address", help="with --backend ray: HOST:PORT of the cluster's head (default: "
                              "a Ray instance on this machine, 127.0.0.1 only); on several machines, give --storage a "
                              "database every node reaches")
CPUS_PER_TRIAL = typer.Option(None, "--cpus-per-trial", help="with --backend ray: CPUs each trial holds (default 1; "
                              "fractions allowed)")
GPUS_PER_TRIAL = typer.Option(None, "--gpus-per-trial", help="with --backend ray: GPUs each trial holds (default 0; "
                              "fractions allowed)")


def _search_command(name: str, config: Path, overrides: Optional[list[str]], out: Path, trials: Optional[int],
                    storage: Optional[str], options: list[str]) -> str:
    """A search's command line as results record it."""
    return " ".join(["harkd", name, str(config), *(overrides or []), "--out", str(out)]
                    + (["--trials", str(trials)] if trials is not None else [])
                    + (["--storage", storage] if storage else []) + options)


@app.command("search-head", context_settings={"allow_extra_args": False})
def search_head(
    config: Path = typer.Argument(..., help="search YAML: a run config's data and student sections plus `search` "
                                            "(see configs/dsads-head-search.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. students.train.epochs=2"),
    trials: Optional[int] = typer.Option(None, "--trials", help="finished trials in total, resumed ones included "
                                                                "(default: search.trials)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for search.json, search.png and search.db "
                                                           "(default: runs/<config name>)"),
    storage: Optional[str] = SEARCH_STORAGE,
    print_config: bool = SEARCH_PRINT_CONFIG,
    backend: str = TRIALS_BACKEND,
    address: Optional[str] = TRIALS_ADDRESS,
    cpus_per_trial: Optional[float] = CPUS_PER_TRIAL,
    gpus_per_trial: Optional[float] = GPUS_PER_TRIAL,
) -> None:
    """SMLDist's classifier-head search: the best head for the student under the config's cost budget."""
    from harkd.experiment.config import read_config
    from harkd.experiment.ray_backend import RayBackend
    from harkd.search import load_search_config, run_head_search
    from harkd.search.head_search import search_yaml

    if print_config:
        typer.echo(search_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    ray = RayBackend.from_options(backend, address, cpus_per_trial, gpus_per_trial, per="trial")
    cfg = load_search_config(config, overrides or [])
    out = out or Path("runs") / config.stem
    command = _search_command("search-head", config, overrides, out, trials, storage,
                              ray.cli_options("trial") if ray else [])
    results = run_head_search(cfg, out, config.stem, trials, storage, command,
                              log=lambda line: typer.echo(line, err=True), ray=ray)
    best = results["best"]
    if best is None:
        typer.echo(f"no head within the budget among {results['finished']} trials; wrote {out / 'search.json'}")
        return
    options = " ".join(f"{k}={v}" for k, v in best["options"].items() if k != "head")
    typer.echo(f"best head: {best['head']} ({options}): {best['params']:,} params, {best['flops'] / 1e6:.3f} "
               f"MFLOPs, val F1 {best['val_f1']:.3f} (trial {best['number']} of {results['finished']})")
    typer.echo(f"wrote {out / 'search.json'} and {out / 'search.png'}")


@app.command("search-sensors", context_settings={"allow_extra_args": False})
def search_sensors_cmd(
    config: Path = typer.Argument(..., help="search YAML: a run config (teacher, one student model, optional "
                                            "personalise) with `search` in place of `methods` (see "
                                            "configs/dsads-sensors.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. search.budget.positions=2"),
    trials: Optional[int] = typer.Option(None, "--trials", help="distinct kits to train in total, resumed ones "
                                                                "included (default: search.trials)"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for report.md, search.json, search.png, configs/ "
                                                           "and search.db (default: runs/<config name>)"),
    storage: Optional[str] = SEARCH_STORAGE,
    confirm: bool = typer.Option(False, "--confirm", help="run each member's config on the config's split and add "
                                 "its test macro-F1 to the report"),
    jobs: int = typer.Option(1, "--jobs", min=1, help="processes sharing the study, and for --confirm the runs' "
                                                      "worker processes"),
    print_config: bool = SEARCH_PRINT_CONFIG,
    backend: str = TRIALS_BACKEND,
    address: Optional[str] = TRIALS_ADDRESS,
    cpus_per_trial: Optional[float] = CPUS_PER_TRIAL,
    gpus_per_trial: Optional[float] = GPUS_PER_TRIAL,
) -> None:
    """Which sensors to wear: the Pareto front of validation macro-F1 against cost over kits of sensor groups, each
    student distilled from the full teacher."""
    from harkd.experiment.config import read_config
    from harkd.experiment.ray_backend import RayBackend
    from harkd.search.sensor_report import run_sensor_search
    from harkd.search.sensor_search import load_sensor_search
    from harkd.search.sensor_space import sensor_search_yaml

    if print_config:
        typer.echo(sensor_search_yaml(read_config(config, overrides or []), str(config)), nl=False)
        return
    ray = RayBackend.from_options(backend, address, cpus_per_trial, gpus_per_trial, per="trial")
    cfg = load_sensor_search(config, overrides or [])
    out = out or Path("runs") / config.stem
    command = _search_command("search-sensors", config, overrides, out, trials, storage,
                              (["--confirm"] if confirm else []) + (["--jobs", str(jobs)] if jobs != 1 else [])
                              + (ray.cli_options("trial") if ray else []))
    results = run_sensor_search(cfg, out, config.stem, trials, storage, jobs, confirm, command,
                                log=lambda line: typer.echo(line, err=True), ray=ray)
    for member in results["members"]:
        typer.echo(f"{'front' if member['on_front'] else 'best at its positions'}: {member['kit']}: "
                   f"{member['positions']} position(s), {member['channels']} channels, val F1 "
                   f"{member['val_f1']:.3f} -> {member['config']}")
    typer.echo(f"wrote {out / 'report.md'}, {out / 'search.json'} and {out / 'search.png'}")


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="two or more run folders (or their results.json), same folds and "
                                                "seeds"),
    out: Path = typer.Option(..., "--out", help="folder for the merged results.json and report.md"),
) -> None:
    """Merge runs (e.g. the KD zoo, TSAK and SMLDist, each with its own teacher) into one comparison table."""
    from harkd.experiment.compare import merge_results, read_results
    from harkd.experiment.report import format_summary_table, write_results

    command = " ".join(["harkd", "compare", *map(str, runs), "--out", str(out)])
    merged = merge_results([read_results(run) for run in runs], command)
    write_results(merged, out)
    typer.echo(format_summary_table(merged["summary"]))
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'}")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary folders go, finished units stay


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)  # `kill`, a scheduler's time limit
    try:
        app()
    except HarkdError as exc:
        typer.echo(f"harkd: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("harkd: interrupted", err=True)
        sys.exit(130)
