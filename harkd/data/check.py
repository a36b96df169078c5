"""`harkd data check`: a dataset in harkd's generic format read where it is (a folder, or an archive unpacked into a
temporary folder), summarised as `harkd data info` would, with every problem in one line naming the user's own file
(for an archive: the file as a member of it, `factory.tar.gz/factory/s01.csv`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harkd.data.catalog import describe, generic_windowing
from harkd.data.install import _archive_kind, _as_given, _reading, _unpack, install_name
from harkd.data.loaders.generic import SCHEMA_FILE, check_generic, locate_generic, schema_name
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError


@dataclass
class CheckReport:
    folder: str  # where dataset.yaml is, as the user names it
    problems: list[str] = field(default_factory=list)
    info: dict[str, Any] | None = None  # catalog.describe of what loaded, plus "declared_units"; None if nothing did


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
        shown = [line.replace(tmp, source) for line in report.problems]
        return CheckReport(report.folder.replace(tmp, source), shown, report.info)


def _located(path: Path, shown: str) -> Path:
    folder = locate_generic(path)
    if folder is None:
        raise HarkdError(f"{shown}: no {SCHEMA_FILE} at the top or one folder down (see docs/generic-format.md)")
    return folder


def _check_folder(folder: Path, windowing: WindowConfig | None) -> CheckReport:
    found = check_generic(folder)
    report = CheckReport(str(folder), found.problems)
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
    report.info = {**describe(found.recordings, windowing, windows), "declared_units": found.units}
    return report
