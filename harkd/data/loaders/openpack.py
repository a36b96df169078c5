"""OpenPack loader: four ATR IMUs (optionally the E4 wrist accelerometer) with packaging-operation labels.

Publisher layout, the same in the sample archive and the Zenodo release: `<version>/<user>/<stream>/<session>.csv`,
e.g. `v1.0.0/U0209/atr/atr01/S0500.csv`. Sessions are found by globbing the ATR files, so any number of users,
sessions and versions (v1.0.0, v0.3.0, ...) load unchanged.

Version rule: a (user, session) found in several version folders is read from the newest numbered release; a folder
that is not a numbered release (the `vX.X.X` pre-release) is used only for sessions no numbered release has.

Streams are aligned on their unix-millisecond timestamps and linearly resampled to `rate_hz` over the span where all
of them have data. Labels are the ten packaging operations plus Null (no operation annotated).

Citation: N. Yoshimura, J. Morales, T. Maekawa, T. Hara, "OpenPack: A Large-scale Dataset for Recognizing Packaging
Works in IoT-enabled Logistic Environments", IEEE PerCom 2024 (data: Zenodo, doi:10.5281/zenodo.5909086).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from harkd.data.recording import ChannelSpec, Recording, fill_short_gaps, read_numeric_table, sensor_channels
from harkd.data.registry import DatasetSpec, Layout, WindowConfig, register_dataset
from harkd.errors import HarkdError

OPERATIONS = (
    (100, "Picking"), (200, "Relocate Item Label"), (300, "Assemble Box"), (400, "Insert Items"),
    (500, "Close Box"), (600, "Attach Box Label"), (700, "Scan Label"), (800, "Attach Shipping Label"),
    (900, "Put on Back Table"), (1000, "Fill out Order"), (8100, "Null"),
)
CLASS_NAMES = tuple(name for _, name in OPERATIONS)
NULL_CLASS = CLASS_NAMES.index("Null")
_CLASS_OF_CODE = {code: i for i, (code, _) in enumerate(OPERATIONS)}

# Device placement from openpack-toolkit docs/DATA_STREAM.md: atr01/atr02 on the right/left wrist, atr03/atr04 on the
# right/left upper arm; E4 e401 on the right wrist (e402, left wrist, is not in the sample archive).
ATR_DEVICES = {"atr01": "right_wrist", "atr02": "left_wrist", "atr03": "right_arm", "atr04": "left_arm"}
E4_DEVICE, E4_POSITION = "e401", "right_wrist"
_ATR_COLUMNS = ("unixtime", "acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z",
                "quat_w", "quat_x", "quat_y", "quat_z")
_E4_COLUMNS = ("time", "acc_x", "acc_y", "acc_z")

LABEL_SOURCES = ("auto", "segments", "1hz")
# Preference order for "auto". v1.0.0 has segments and a 1 Hz copy; v0.3.0 only activity-1s; the pre-release keeps
# 1 Hz rows under the segments' folder name, so each file's kind is read from its header.
_LABEL_FOLDERS = ("openpack-operations", "openpack-operations-1hz", "activity-1s")
_RELEASE = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
_EPOCH = pd.Timestamp(0, tz="UTC")


def channels(include_e4: bool = False) -> tuple[ChannelSpec, ...]:
    specs: list[ChannelSpec] = []
    for device, position in ATR_DEVICES.items():
        specs += sensor_channels(position, "acc", "G", sensor=device)
        specs += sensor_channels(position, "gyro", "dps", sensor=device)
        specs += sensor_channels(position, "quat", "1", axes="wxyz", sensor=device)
    if include_e4:
        specs += sensor_channels(E4_POSITION, "acc", "G", sensor=E4_DEVICE)
    return tuple(specs)


LAYOUT = Layout("v*/U*/atr", max_depth=3)  # <version>/<user>/atr
locate = LAYOUT.locate  # the publisher's folder in an unpacked tree, or None


def _version_rank(name: str) -> tuple[int, ...]:
    match = _RELEASE.fullmatch(name)
    return (1, *map(int, match.groups())) if match else (0,)


def find_sessions(root: Path) -> dict[tuple[str, str], Path]:
    """(user, session) -> the user folder to read it from, by the version rule in the module docstring."""
    best: dict[tuple[str, str], Path] = {}
    for path in sorted(Path(root).glob("v*/U*/atr/atr0[1-4]/S*.csv")):
        user_dir = path.parents[2]
        key = (user_dir.name, path.stem)
        if key not in best or _version_rank(user_dir.parent.name) > _version_rank(best[key].parent.name):
            best[key] = user_dir
    return dict(sorted(best.items()))


def _header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            line = f.readline()
    except FileNotFoundError:
        raise HarkdError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarkdError(f"{path}: cannot read ({exc})") from None
    return [name.strip() for name in line.strip().split(",")]


def _column_indices(header: Sequence[str], names: Sequence[str], path: Path) -> list[int]:
    missing = [name for name in names if name not in header]
    if missing:
        raise HarkdError(f"{path}: missing column(s) {missing}; the header has {list(header)}")
    return [header.index(name) for name in names]


def _read_stream(path: Path, columns: Sequence[str], max_gap_s: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Strictly increasing timestamps (ms), values with short NaN runs filled, and how many values were filled."""
    header = _header(path)
    idx = _column_indices(header, columns, path)
    table = read_numeric_table(path, len(header), header=True)
    t, values = table[:, idx[0]], table[:, idx[1:]]
    first_row = 2  # file row of table[0]: row 1 is the header
    if np.isnan(t).any():
        raise HarkdError(f"{path}: row {int(np.flatnonzero(np.isnan(t))[0]) + first_row} has no {columns[0]}")
    # Sort (stable) and keep the first of duplicated timestamps, remembering file rows for error messages.
    order = np.argsort(t, kind="stable")
    order = order[np.concatenate([[True], np.diff(t[order]) > 0])]
    if order.size < 2:
        raise HarkdError(f"{path}: fewer than two distinct timestamps")
    step = np.diff(t[order])
    typical = float(np.median(step))
    # NaN runs are filled in file order so that fill_short_gaps names the rows as they are in the file.
    values, filled = fill_short_gaps(values, 1000.0 / typical, str(path), max_gap_s, first_row=first_row,
                                     columns=list(columns[1:]))
    # Jitter of up to one sample period is not a gap, whatever max_gap_s says (as fill_short_gaps allows one sample).
    missing = step - typical
    if (missing > max(max_gap_s * 1000, typical)).any():
        i = int(np.argmax(missing))
        raise HarkdError(f"{path}: no data for {missing[i] / 1000:.2f} s between rows {order[i] + first_row} and "
                         f"{order[i + 1] + first_row}, more than the {max_gap_s} s that may be interpolated")
    return t[order], values[order], filled


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (file row, fields) of a text CSV, every row checked to have the header's field count."""
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise HarkdError(f"{path}: row {reader.line_num} has {len(fields)} fields, expected "
                                     f"{len(header)} (truncated or malformed file)")
                rows.append((reader.line_num, [field.strip() for field in fields]))
    except FileNotFoundError:
        raise HarkdError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HarkdError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise HarkdError(f"{path}: no data rows")
    return header, rows


def _integer(value: str, path: Path, row: int, column: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise HarkdError(f"{path}: row {row}: {column} {value!r} is not an integer")
    return int(number)


def _operation(value: str, path: Path, row: int, column: str) -> int:
    if not value:
        return NULL_CLASS
    code = _integer(value, path, row, column)
    if code not in _CLASS_OF_CODE:
        raise HarkdError(f"{path}: row {row}: unknown operation {code} in column {column!r}; "
                         f"known: {sorted(_CLASS_OF_CODE)}")
    return _CLASS_OF_CODE[code]


def _unix_ms(value: str, path: Path, row: int, column: str) -> int:
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise HarkdError(f"{path}: row {row}: {column} {value!r} is not a time") from None
    if stamp is pd.NaT or stamp.tzinfo is None:
        # OpenPack writes local time with its +09:00 offset; without an offset the instant is unknown.
        raise HarkdError(f"{path}: row {row}: {column} {value!r} has no UTC offset")
    return (stamp - _EPOCH) // pd.Timedelta(milliseconds=1)


def _annotation_table(path: Path, header: list[str], rows: list[tuple[int, list[str]]],
                      kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Starts and ends (unix ms), class indices and box numbers of a segment or 1 Hz operation file."""
    code_column = "id" if kind == "segments" or "id" in header else "operation"
    time_columns = ("start", "end") if kind == "segments" else ("unixtime",)
    idx = dict(zip(("box", code_column, *time_columns),
                   _column_indices(header, ("box", code_column, *time_columns), path)))
    starts, ends, classes, boxes = [], [], [], []
    for row, fields in rows:
        if kind == "segments":
            start = _unix_ms(fields[idx["start"]], path, row, "start")
            end = _unix_ms(fields[idx["end"]], path, row, "end")
        else:
            # A 1 Hz label at t covers [t, t + 1 s).
            start = _integer(fields[idx["unixtime"]], path, row, "unixtime")
            end = start + 1000
        starts.append(start)
        ends.append(end)
        classes.append(_operation(fields[idx[code_column]], path, row, code_column))
        box = fields[idx["box"]]
        boxes.append(_integer(box, path, row, "box") if box else -1)
    return np.array(starts), np.array(ends), np.array(classes), np.array(boxes)


def _labels(user_dir: Path, session: str, grid: np.ndarray, label_source: str) -> tuple[np.ndarray, np.ndarray]:
    """Class index and box number per grid time; Null and -1 where no operation covers it."""
    looked_for = []
    for folder in _LABEL_FOLDERS:
        path = user_dir / "annotation" / folder / f"{session}.csv"
        looked_for.append(str(path))
        if not path.is_file():
            continue
        kind = "segments" if {"start", "end"} <= set(_header(path)) else "1hz"
        if label_source not in ("auto", kind):
            continue
        starts, ends, classes, boxes = _annotation_table(path, *_read_rows(path), kind)
        # Segments do not overlap in OpenPack; were they to, the later-starting one would win from its start on.
        order = np.argsort(starts, kind="stable")
        starts, ends, classes, boxes = starts[order], ends[order], classes[order], boxes[order]
        i = np.maximum(np.searchsorted(starts, grid, side="right") - 1, 0)
        covered = (grid >= starts[i]) & (grid < ends[i])
        if not covered.any():
            raise HarkdError(f"{path}: no operation overlaps the sensor data (labels {starts[0]}-{ends[-1]} ms, "
                             f"signals {grid[0]:.0f}-{grid[-1]:.0f} ms)")
        return np.where(covered, classes[i], NULL_CLASS), np.where(covered, boxes[i], -1)
    wanted = "" if label_source == "auto" else f"{label_source} "
    raise HarkdError(f"{user_dir}: no {wanted}operation labels for session {session}; looked for "
                     f"{', '.join(looked_for)}")


def _load_session(user_dir: Path, session: str, rate_hz: float, include_e4: bool, max_gap_s: float,
                  label_source: str) -> Recording:
    files = [(user_dir / "atr" / device / f"{session}.csv", _ATR_COLUMNS) for device in ATR_DEVICES]
    if include_e4:
        files.append((user_dir / "e4" / E4_DEVICE / "acc" / f"{session}.csv", _E4_COLUMNS))
    streams = [_read_stream(path, columns, max_gap_s) for path, columns in files]
    start = max(t[0] for t, _, _ in streams)
    end = min(t[-1] for t, _, _ in streams)
    step = 1000.0 / rate_hz
    if end - start < step:
        raise HarkdError(f"{user_dir}: the sensor streams of session {session} do not overlap in time")
    grid = start + np.arange(int((end - start) // step) + 1) * step
    signals = np.column_stack([np.interp(grid, t, column) for t, values, _ in streams for column in values.T])
    labels, box = _labels(user_dir, session, grid, label_source)
    return Recording(signals=signals, channels=channels(include_e4), labels=labels, class_names=CLASS_NAMES,
                     subject=user_dir.name, session=session, rate_hz=rate_hz, null_class=NULL_CLASS,
                     annotations={"box": box}, interpolated_samples=sum(n for _, _, n in streams),
                     source=str(user_dir))


def load(root: Path, rate_hz: float = 30.0, include_e4: bool = False, max_gap_s: float = 1.0,
         label_source: str = "auto") -> list[Recording]:
    """One recording per (user, session) under `root`, sorted by user then session.

    label_source: "segments" (v1.0.0 openpack-operations), "1hz" (openpack-operations-1hz, or v0.3.0 activity-1s),
    or "auto" (segments where present, else 1 Hz). include_e4 adds the right-wrist E4 accelerometer; every session
    must then have it. `interpolated_samples` counts the NaN values filled across all of a session's files.
    """
    root = Path(root)
    rate_hz, max_gap_s = float(rate_hz), float(max_gap_s)
    if not rate_hz > 0:
        raise HarkdError(f"openpack: rate_hz must be positive, got {rate_hz}")
    if not max_gap_s >= 0:
        raise HarkdError(f"openpack: max_gap_s must not be negative, got {max_gap_s}")
    if label_source not in LABEL_SOURCES:
        raise HarkdError(f"openpack: label_source must be one of {list(LABEL_SOURCES)}, got {label_source!r}")
    sessions = find_sessions(root)
    if not sessions:
        raise HarkdError(f"{root}: no OpenPack sessions (expected <version>/<user>/atr/atr01/<session>.csv, "
                         f"e.g. v1.0.0/U0209/atr/atr01/S0500.csv)")
    return [_load_session(user_dir, session, rate_hz, bool(include_e4), max_gap_s, label_source)
            for (_, session), user_dir in sessions.items()]


OPENPACK = register_dataset(DatasetSpec(
    name="openpack",
    title="OpenPack: packaging work, ATR IMUs on both wrists and upper arms",
    load=load,
    layout=LAYOUT,
    # 2 s windows, 1 s stride at 30 Hz: operations last 1.6-26 s (median 6.7 s in the sample), so most 2 s windows
    # hold one operation; the stride doubles the windows without repeating more than half a window.
    default_windowing=WindowConfig(length=60, stride=30, label_rule="majority", drop_null=True),
    licence="CC BY-NC-SA 4.0",
    archives={"openpack-sample.tar.xz": "623af9738d11c13fed91ff9096462871644d00fc0a5b3dcfd970b660d6c66c15"},
    options={"rate_hz": 30.0, "include_e4": False, "max_gap_s": 1.0, "label_source": "auto"},
))
