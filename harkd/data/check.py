"""`harkd data check`: a dataset in harkd's generic format read where it is (a folder, or an archive unpacked into a
temporary folder), summarised as `harkd data info` would, with every problem in one line naming the user's own file
(for an archive: the file as a member of it, `factory.tar.gz/factory/s01.csv`), and warnings for what reads without
error but is likely not meant: numbers that do not fit their declared unit, files no session reads, copied sessions,
misspelt and tiny classes."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harkd.data.catalog import describe, generic_windowing
from harkd.data.install import _archive_kind, _as_given, _reading, _unpack, install_name
from harkd.data.loaders.generic import SCHEMA_FILE, GenericCheck, check_generic, locate_generic, schema_name
from harkd.data.plausibility import Declared, stretches_of, unit_findings
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError

SMALL_CLASS = 0.2  # a class with fewer windows than this share of the median class's is reported


@dataclass
class CheckReport:
    folder: str  # where dataset.yaml is, as the user names it
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None  # catalog.describe of what loaded, plus "declared_units"; None if nothing did
    warnings: list[str] = field(default_factory=list)  # likely not meant, though readable (errors with --strict)
    class_order: str | None = None  # where the class order comes from


def parse_windowing(text: str | None) -> WindowConfig | None:
    """'length=100,stride=50' (also label_rule=centre, drop_null=false) as a WindowConfig; None for None."""
    if text is None:
        return None
    values = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise HarkdError(f"--windowing {text!r}: expected key=value parts such as 'length=100,stride=50'")
        values[key.strip()] = yaml.safe_load(value)
    try:
        return WindowConfig(**values)
    except TypeError as exc:  # an unknown key
        raise HarkdError(f"--windowing {text!r}: {exc}") from None


def check_dataset(source: str, windowing: WindowConfig | None = None) -> CheckReport:
    """Check a folder (holding dataset.yaml, or its parent) or an archive of one, without installing anything."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _check_folder(_located(path, source), windowing)
    if not path.is_file():
        raise HarkdError(f"{source}: no such folder or archive")
    kind = _archive_kind(path.name, source)
    with tempfile.TemporaryDirectory(prefix="harkd-check-") as tmp, _as_given(source, Path(tmp)):
        with _reading(source):
            _unpack(path, kind, Path(tmp))
        report = _check_folder(_located(Path(tmp), source), windowing)
        return CheckReport(report.folder.replace(tmp, source), [line.replace(tmp, source) for line in report.problems],
                           report.info, [line.replace(tmp, source) for line in report.warnings],
                           report.class_order)


def _located(path: Path, shown: str) -> Path:
    folder = locate_generic(path)
    if folder is None:
        raise HarkdError(f"{shown}: no {SCHEMA_FILE} at the top or one folder down (see docs/generic-format.md)")
    return folder


def _check_folder(folder: Path, windowing: WindowConfig | None) -> CheckReport:
    found = check_generic(folder)
    report = CheckReport(str(folder), found.problems, warnings=found.warnings, class_order=found.class_order)
    if not found.recordings:
        return report
    try:
        install_name(schema_name(folder / SCHEMA_FILE), str(folder / SCHEMA_FILE))
    except HarkdError as exc:
        report.problems.append(str(exc))
    windowing = windowing or generic_windowing(found.recordings[0].rate_hz)
    windows = None
    try:
        windows = make_windows(found.recordings, windowing)
    except HarkdError as exc:
        report.problems.append(f"{folder}: {exc}")
    units = [(c.spec.name, c.declared_unit, c.spec.unit) for c in found.schema.channels]
    report.info = {**describe(found.recordings, windowing, windows), "declared_units": units}
    report.warnings = [*_unit_warnings(found), *report.warnings, *_small_classes(report.info, folder)]
    return report


def _unit_warnings(found: GenericCheck) -> list[str]:
    declared = [Declared(c.declared_unit, found.schema.where, c.key) for c in found.schema.channels]
    return unit_findings(stretches_of(found.recordings), found.recordings[0].channels, declared)


def _small_classes(info: dict[str, Any], folder: Path) -> list[str]:
    counts = {c["name"]: c["windows"] for c in info["classes"] if c["name"] != info["null_class"]}
    median = float(np.median(list(counts.values()))) if counts else 0.0
    return [f"{folder}: class {name!r} has {n} windows, fewer than {SMALL_CLASS:.0%} of the median class's "
            f"({median:g}): too few to learn or score it; record more, or merge or drop it"
            for name, n in counts.items() if n < SMALL_CLASS * median]
