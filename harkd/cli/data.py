"""`harkd data ...`: install, check, list, describe datasets and write a subject's recordings as a stream CSV."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from harkd.cli.app import data_app

if TYPE_CHECKING:
    from harkd.data.check import CheckReport


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
