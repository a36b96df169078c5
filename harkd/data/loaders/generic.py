"""The generic format for a user's own recordings: a folder with `dataset.yaml` and one CSV or Parquet file per session.

The schema and its rules are documented in docs/generic-format.md; every problem is a one-line HarkdError that names
the YAML key path or the session file, row and column. `check_generic` reads a folder the same way but collects every
problem it can (one per channel entry, session entry and session file) instead of stopping at the first.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from harkd.data.recording import ChannelSpec, Recording, check_same_classes, fill_short_gaps, max_gap_samples
from harkd.data.registry import Layout
from harkd.data.units import to_si
from harkd.errors import HarkdError

SCHEMA_FILE = "dataset.yaml"
GENERIC_LAYOUT = Layout(SCHEMA_FILE, max_depth=1)  # what locate_generic finds, for reading an archive's listing
RATE_TOLERANCE = 0.05
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# Tokens read as a missing value in numeric CSV columns; the label column keeps every value as text, so that labels
# such as 'null' or 'None' stay labels.
_NA_TOKENS = ["", "nan", "NaN", "NA", "N/A", "null", "NULL"]
_TOP_REQUIRED = {"name", "rate_hz", "channels", "sessions"}
_TOP_OPTIONAL = {"label_column", "time_column", "time_unit", "null_label", "classes", "max_gap_s", "annotations"}
_CHANNEL_REQUIRED = {"column", "position", "modality", "axis"}
_CHANNEL_OPTIONAL = {"unit", "sensor", "orientation", "placement"}
_SESSION_REQUIRED = {"file", "subject"}
_SESSION_OPTIONAL = {"session", "label"}
_SESSION_SUFFIXES = (".csv", ".parquet")
DEFAULT_NULL = "Null"  # the class of sessions without labels when null_label is not given
_FIELD = re.compile(r"\{([^{}]*)\}")  # a {field} of a sessions pattern


@dataclass(frozen=True)
class _Channel:
    column: str
    spec: ChannelSpec  # with the modality's SI unit where harkd knows the modality
    declared_unit: str  # the unit dataset.yaml gives
    factor: float  # declared unit -> spec.unit


@dataclass(frozen=True)
class _Session:
    file: Path
    subject: str
    session: str
    label: str | None  # the fixed label of every sample (no label column is read), else None
    where: str  # where the session is described, for errors about its fixed label


@dataclass(frozen=True)
class _Schema:
    where: str  # the YAML path, prefixed to every schema error
    name: str
    rate_hz: float
    label_column: str | None
    time_column: str | None
    time_scale: float  # seconds per time-column unit
    null_label: str | None
    classes: tuple[str, ...] | None
    max_gap_s: float
    channels: tuple[_Channel, ...]
    sessions: tuple[_Session, ...]
    annotations: tuple[str, ...]
    channels_dropped: int = 0  # entries `harkd data check` recorded as problems: the files cannot be read against them

    @property
    def max_gap(self) -> int:
        return max_gap_samples(self.max_gap_s, self.rate_hz)

    def label_column_of(self, session: _Session) -> str | None:
        """The column to read labels from: none for a session with a fixed label or without labels."""
        return None if session.label is not None else self.label_column

    @property
    def effective_null(self) -> str | None:
        """The null class: null_label, or Null when some session has no labels at all (they are Null throughout)."""
        unlabelled = self.label_column is None and any(s.label is None for s in self.sessions)
        return self.null_label if self.null_label is not None else DEFAULT_NULL if unlabelled else None


class Problems:
    """Loading stops at the first problem; `harkd data check` collects each one and reads on where it can."""

    def __init__(self, collect: bool):
        self.collect = collect
        self.lines: list[str] = []

    @contextmanager
    def each(self) -> Iterator[None]:
        """One part (a channel entry, a session file): its problem is recorded and the part skipped."""
        try:
            yield
        except HarkdError as exc:
            if not self.collect:
                raise
            self.lines.append(str(exc))


@dataclass
class _Table:
    """One session file read and checked, with labels still as text."""

    session: _Session
    signals: np.ndarray  # in the channels' stored units
    labels: np.ndarray  # str objects
    rows: np.ndarray  # the file row of every sample (rows may have been sorted by time)
    annotations: dict[str, np.ndarray]
    interpolated: int


# --- schema ---------------------------------------------------------------------------------------------------------

def check_keys(value: Any, where: str, required: set[str], optional: set[str]) -> dict:
    if not isinstance(value, dict):
        raise HarkdError(f"{where}: expected a mapping, got {_kind(value)}")
    valid = ", ".join(sorted(required | optional))
    for key in value:
        if key not in required and key not in optional:
            raise HarkdError(f"{where}: unknown key {key!r}; valid keys: {valid}")
    for key in sorted(required):
        if key not in value:
            raise HarkdError(f"{where}: missing required key {key!r}")
    return value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _text(value: Any, where: str, *, may_be_empty: bool = False) -> str:
    """A name (column, label, subject, axis ...): YAML may give it as a string or an integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise HarkdError(f"{where}: expected a string, got {_kind(value)}")
    text = str(value)
    if not text.strip() and not may_be_empty:
        raise HarkdError(f"{where}: must not be empty")
    return text


def _number(value: Any, where: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or value < 0 or (positive and value == 0):
        raise HarkdError(f"{where}: expected a {'positive' if positive else 'non-negative'} number, "
                         f"got {_kind(value)}")
    return float(value)


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise HarkdError(f"{where}: expected a non-empty list, got {_kind(value)}")
    return value


def _unique(names: Sequence[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise HarkdError(f"{where}[{i}]: {what} {name!r} is listed twice")
        seen.add(name)


def _load_yaml(yaml_path: Path) -> Any:
    where = str(yaml_path)
    try:
        return yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarkdError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarkdError(f"{where}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise HarkdError(f"{where}: not valid YAML ({at}{getattr(exc, 'problem', None) or exc})") from None


def schema_name(yaml_path: Path) -> str:
    """The `name:` of a dataset.yaml (what `harkd data install` checks the install name against)."""
    raw = _load_yaml(yaml_path)
    if not isinstance(raw, dict) or "name" not in raw:
        raise HarkdError(f"{yaml_path}: missing required key 'name'")
    return _text(raw["name"], f"{yaml_path}: name")


def _channel(entry: Any, at: str) -> _Channel:
    entry = check_keys(entry, at, _CHANNEL_REQUIRED, _CHANNEL_OPTIONAL)
    position, modality, axis = (_text(entry[k], f"{at}.{k}") for k in ("position", "modality", "axis"))
    declared = _text(entry.get("unit", ""), f"{at}.unit", may_be_empty=True)
    unit, factor = to_si(declared, modality, f"{at}.unit")
    notes = {k: _text(entry[k], f"{at}.{k}") for k in ("sensor", "orientation", "placement") if k in entry}
    return _Channel(_text(entry["column"], f"{at}.column"), ChannelSpec(position, modality, axis, unit, **notes),
                    declared, factor)


def _session_file(folder: Path, name: str, at: str) -> Path:
    if not name.lower().endswith(_SESSION_SUFFIXES):
        raise HarkdError(f"{at}: {Path(name).name!r} is neither .csv nor .parquet")
    return folder / name


def _listed_session(entry: Any, folder: Path, at: str) -> _Session:
    entry = check_keys(entry, at, _SESSION_REQUIRED, _SESSION_OPTIONAL)
    file = _session_file(folder, _text(entry["file"], f"{at}.file"), f"{at}.file")
    session = _text(entry["session"], f"{at}.session") if "session" in entry else file.stem
    label = _text(entry["label"], f"{at}.label") if "label" in entry else None
    return _Session(file, _text(entry["subject"], f"{at}.subject"), session, label, f"{at}.label")


def _pattern_regex(pattern: str, at: str) -> re.Pattern:
    """`{subject}_{label}_t{trial}.csv` as a regex: each field matches the shortest text without '/'."""
    parts, fields, pos = [], [], 0
    for match in _FIELD.finditer(pattern):
        name = match.group(1)
        if not name.isidentifier():
            raise HarkdError(f"{at}: {{{name}}} in pattern {pattern!r} is not a field name (letters, digits, _)")
        if name in fields:
            raise HarkdError(f"{at}: field {{{name}}} appears twice in pattern {pattern!r}")
        parts += [re.escape(pattern[pos:match.start()]), f"(?P<{name}>[^/]+?)"]
        fields.append(name)
        pos = match.end()
    parts.append(re.escape(pattern[pos:]))
    if "subject" not in fields:
        raise HarkdError(f"{at}: pattern {pattern!r} needs a {{subject}} field")
    return re.compile("".join(parts))


def _pattern_sessions(pattern: str, folder: Path, at: str) -> list[_Session]:
    """Every file under `folder` whose path (relative, with '/') the pattern matches, in sorted order; fields
    subject, session and label give the session's, any other field (e.g. {trial}) only has to match."""
    _session_file(folder, pattern, at)
    regex = _pattern_regex(pattern, at)
    sessions = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        if match := regex.fullmatch(file.relative_to(folder).as_posix()):
            fields = match.groupdict()
            sessions.append(_Session(file, fields["subject"], fields.get("session") or file.stem, fields.get("label"),
                                     f"{file} (label from the file name)"))
    if not sessions:
        raise HarkdError(f"{at}: no file under {folder} matches the pattern {pattern!r}")
    return sessions


def _sessions(value: Any, folder: Path, where: str, problems: Problems) -> list[_Session]:
    """A pattern (one string) or a list of entries."""
    if isinstance(value, str):
        return _pattern_sessions(value, folder, f"{where}: sessions")
    sessions = []
    for i, entry in enumerate(_list(value, f"{where}: sessions")):
        with problems.each():
            sessions.append(_listed_session(entry, folder, f"{where}: sessions[{i}]"))
    with problems.each():
        _unique([str(s.file) for s in sessions], f"{where}: sessions", "file")
    with problems.each():
        _unique([f"{s.subject}/{s.session}" for s in sessions], f"{where}: sessions", "subject/session")
    return sessions


def _names(raw: dict, key: str, where: str, what: str) -> tuple[str, ...]:
    names = tuple(_text(c, f"{where}: {key}[{i}]") for i, c in enumerate(_list(raw[key], f"{where}: {key}")))
    _unique(names, f"{where}: {key}", what)
    return names


def read_schema(yaml_path: Path, problems: Problems | None = None) -> _Schema:
    where = str(yaml_path)
    problems = problems or Problems(collect=False)
    raw = check_keys(_load_yaml(yaml_path), where, _TOP_REQUIRED, _TOP_OPTIONAL)
    rate_hz = _number(raw["rate_hz"], f"{where}: rate_hz", positive=True)
    channels = []
    entries = _list(raw["channels"], f"{where}: channels")
    for i, entry in enumerate(entries):
        with problems.each():
            channels.append(_channel(entry, f"{where}: channels[{i}]"))
    with problems.each():
        _unique([c.column for c in channels], f"{where}: channels", "column")
    with problems.each():
        _unique([c.spec.name for c in channels], f"{where}: channels", "channel (position/modality/axis@sensor)")
    sessions = _sessions(raw["sessions"], yaml_path.parent, where, problems)
    time_unit = raw.get("time_unit", "s")
    if not isinstance(time_unit, str) or time_unit not in _TIME_UNITS:
        raise HarkdError(f"{where}: time_unit: expected one of {', '.join(_TIME_UNITS)}, got {_kind(time_unit)}")

    def optional_text(key: str) -> str | None:
        return _text(raw[key], f"{where}: {key}") if raw.get(key) is not None else None

    schema = _Schema(
        where=where,
        name=_text(raw["name"], f"{where}: name"),
        rate_hz=rate_hz,
        label_column=optional_text("label_column"),
        time_column=optional_text("time_column"),
        time_scale=_TIME_UNITS[time_unit],
        null_label=optional_text("null_label"),
        classes=_names(raw, "classes", where, "class") if "classes" in raw else None,
        max_gap_s=_number(raw.get("max_gap_s", 1.0), f"{where}: max_gap_s", positive=False),
        channels=tuple(channels),
        sessions=tuple(sessions),
        annotations=_names(raw, "annotations", where, "annotation") if "annotations" in raw else (),
        channels_dropped=len(entries) - len(channels),
    )
    _check_roles(schema)
    return schema


def _check_roles(schema: _Schema) -> None:
    """A column may play only one role, else e.g. the label column would also be read as a signal."""
    roles = [(f"channels[{i}].column", c.column) for i, c in enumerate(schema.channels)]
    roles += [("label_column", schema.label_column)] if schema.label_column else []
    roles += [("time_column", schema.time_column)] if schema.time_column else []
    roles += [(f"annotations[{i}]", a) for i, a in enumerate(schema.annotations)]
    owner: dict[str, str] = {}
    for key, column in roles:
        if column in owner:
            raise HarkdError(f"{schema.where}: {key}: column {column!r} is already used by {owner[column]}")
        owner[column] = key


# --- session files --------------------------------------------------------------------------------------------------

def _needed_columns(schema: _Schema, label_column: str | None) -> list[str]:
    return ([c.column for c in schema.channels] + ([label_column] if label_column else [])
            + ([schema.time_column] if schema.time_column else []) + list(schema.annotations))


def _check_header(header: Sequence[str], columns: Sequence[str], schema: _Schema, path: Path) -> None:
    for column in columns:
        if column not in header:
            shown = ", ".join(map(repr, header[:30])) + (", ..." if len(header) > 30 else "")
            raise HarkdError(f"{path}: column {column!r} named in {Path(schema.where).name} is missing; "
                             f"the file has columns: {shown}")


def _read_csv(path: Path, schema: _Schema, label_column: str | None) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except FileNotFoundError:
        raise HarkdError(f"{path}: file not found (listed in {Path(schema.where).name})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarkdError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise HarkdError(f"{path}: empty file (expected a header row)")
    for i, column in enumerate(header):
        if column in header[:i]:
            raise HarkdError(f"{path}: column {column!r} appears twice in the header")
    columns = _needed_columns(schema, label_column)
    _check_header(header, columns, schema, path)
    # pandas pads a short row with NaN, which would pass as a gap: a truncated file must fail here instead.
    blank_row = None
    for row in reader:
        if not row:
            blank_row = blank_row or reader.line_num
        elif blank_row is not None:
            raise HarkdError(f"{path}: row {blank_row} is empty (data rows must be contiguous)")
        elif len(row) != len(header):
            raise HarkdError(f"{path}: row {reader.line_num} has {len(row)} fields, expected {len(header)} "
                             f"(truncated or malformed file)")
    numeric = [c for c in columns if c != label_column]
    return pd.read_csv(io.StringIO(text), usecols=columns, dtype={label_column: str} if label_column else None,
                       keep_default_na=False, na_values={c: _NA_TOKENS for c in numeric}, low_memory=False)


def _read_parquet(path: Path, schema: _Schema, label_column: str | None) -> pd.DataFrame:
    if not path.is_file():
        raise HarkdError(f"{path}: file not found (listed in {Path(schema.where).name})")
    try:
        parquet = pq.ParquetFile(path)
        columns = _needed_columns(schema, label_column)
        _check_header(parquet.schema_arrow.names, columns, schema, path)
        return parquet.read(columns=columns).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise HarkdError(f"{path}: cannot read Parquet file ({' '.join(str(exc).split())})") from None


def _numeric(frame: pd.DataFrame, column: str, path: Path, first_row: int) -> np.ndarray:
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values):
        coerced = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & values.notna().to_numpy())
        if bad.size:
            raise HarkdError(f"{path}: row {bad[0] + first_row}: column {column!r} holds {values.iloc[bad[0]]!r}, "
                             f"not a number")
        values = coerced
    return values.to_numpy(np.float64, na_value=np.nan)


def _label_text(frame: pd.DataFrame, column: str, path: Path, first_row: int) -> np.ndarray:
    values = frame[column]
    missing = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if missing.size:
        raise HarkdError(f"{path}: row {missing[0] + first_row}: empty label in column {column!r}")
    if pd.api.types.is_float_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise HarkdError(f"{path}: label column {column!r} has type {values.dtype}; labels must be class names "
                         f"(text) or integer codes")
    return values.astype(str).to_numpy(object)


def _time_seconds(frame: pd.DataFrame, schema: _Schema, path: Path, first_row: int) -> np.ndarray:
    values = frame[schema.time_column]
    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet timestamps carry their own unit
        seconds = values.to_numpy("datetime64[ns]").astype(np.int64) * 1e-9
        seconds[values.isna().to_numpy()] = np.nan
        return seconds
    return _numeric(frame, schema.time_column, path, first_row) * schema.time_scale


def _check_timing(time: np.ndarray, rows: np.ndarray, schema: _Schema, path: Path) -> None:
    """Sorted sample times must follow rate_hz; a jump longer than the interpolation limit is missing data."""
    column = schema.time_column
    if time.size < 2:
        return
    step = np.diff(time)
    same = np.flatnonzero(step == 0)
    if same.size:
        raise HarkdError(f"{path}: rows {rows[same[0]]} and {rows[same[0] + 1]} have the same {column!r} value")
    measured = 1.0 / float(np.median(step))
    if abs(measured - schema.rate_hz) > RATE_TOLERANCE * schema.rate_hz:
        raise HarkdError(f"{path}: column {column!r} gives {measured:.4g} Hz, but rate_hz is {schema.rate_hz:g} "
                         f"(off by more than {RATE_TOLERANCE:.0%}; is time_unit right?)")
    jumps = np.flatnonzero(step * schema.rate_hz - 1 > schema.max_gap)
    if jumps.size:
        j = jumps[0]
        raise HarkdError(f"{path}: rows {rows[j]}-{rows[j + 1]}: {column!r} jumps by {step[j]:.4g} s, more than "
                         f"max_gap_s ({schema.max_gap_s:g} s) of missing data; split the session into separate files")


def _read_session(session: _Session, schema: _Schema) -> _Table:
    path = session.file
    is_csv = path.suffix.lower() == ".csv"
    label_column = schema.label_column_of(session)
    frame = (_read_csv if is_csv else _read_parquet)(path, schema, label_column)
    if frame.empty:
        raise HarkdError(f"{path}: no data rows")
    first_row = 2 if is_csv else 1  # CSV rows are line numbers (header = 1); Parquet rows count from 1
    rows = np.arange(len(frame)) + first_row
    order = np.arange(len(frame))
    if schema.time_column:
        time = _time_seconds(frame, schema, path, first_row)
        missing = np.flatnonzero(np.isnan(time))
        if missing.size:
            raise HarkdError(f"{path}: row {rows[missing[0]]}: no value in time column {schema.time_column!r}")
        order = np.argsort(time, kind="stable")
        rows = rows[order]
        _check_timing(time[order], rows, schema, path)

    signals = np.stack([_numeric(frame, c.column, path, first_row) for c in schema.channels], axis=1)[order]
    signals, interpolated = fill_short_gaps(signals, schema.rate_hz, str(path), schema.max_gap_s,
                                            columns=[c.column for c in schema.channels], rows=rows)
    factors = np.array([c.factor for c in schema.channels])
    if (factors != 1.0).any():  # to the SI unit of each modality, in float64 before Recording stores float32
        signals = signals * factors
    annotations = {}
    for name in schema.annotations:
        track = _numeric(frame, name, path, first_row)[order]
        bad = np.flatnonzero(np.isnan(track) | (track != np.round(track)))
        if bad.size:
            raise HarkdError(f"{path}: row {rows[bad[0]]}: annotation column {name!r} needs an integer, "
                             f"got {track[bad[0]]}")
        annotations[name] = track.astype(np.int64)
    if label_column is not None:
        labels = _label_text(frame, label_column, path, first_row)[order]
    else:  # a fixed label, or none at all: the session is Null throughout
        labels = np.full(len(frame), session.label if session.label is not None else schema.effective_null, object)
    return _Table(session, signals, labels, rows, annotations, interpolated)


# --- classes --------------------------------------------------------------------------------------------------------

def _class_names(schema: _Schema, tables: Sequence[_Table]) -> tuple[tuple[str, ...], int | None]:
    """The class list (`classes` as given, else the sorted labels; null last if unlisted) and the null class index."""
    null = schema.effective_null
    if schema.classes is not None:
        names = list(schema.classes)
    else:
        seen = set(pd.unique(np.concatenate([t.labels for t in tables]))) - {null} if tables else set()
        # Integer codes sort by value (2 before 10); anything else sorts as text.
        integer = all(re.fullmatch(r"-?\d+", s) for s in seen)
        names = sorted(seen, key=int if integer else str)
    if null is not None and null not in names:
        names.append(null)
    return tuple(names), names.index(null) if null is not None else None


def _codes(table: _Table, names: tuple[str, ...], schema: _Schema) -> np.ndarray:
    """The table's labels as indices into the class list; a label outside `classes` is an error."""
    codes = pd.Index(names).get_indexer(table.labels).astype(np.int64)
    unknown = np.flatnonzero(codes < 0)  # only when `classes` is given
    if unknown.size:
        i, session = unknown[0], table.session
        at = session.where if session.label is not None else f"{session.file}: row {table.rows[i]}"
        raise HarkdError(f"{at}: label {table.labels[i]!r} is not in classes of {Path(schema.where).name} "
                         f"({', '.join(schema.classes)})")
    return codes


# --- public API -----------------------------------------------------------------------------------------------------

@dataclass
class GenericCheck:
    """What `check_generic` found: the recordings that loaded, every problem (one line each) and, per channel,
    the unit dataset.yaml declares beside the unit harkd stores."""

    recordings: list[Recording] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    units: list[tuple[str, str, str]] = field(default_factory=list)  # (channel name, declared, stored)


def _schema_path(path: Path) -> Path:
    yaml_path = path / SCHEMA_FILE if path.is_dir() else path
    if path.is_dir() and not yaml_path.is_file():
        raise HarkdError(f"{path}: no {SCHEMA_FILE} in this folder (see docs/generic-format.md)")
    return yaml_path


def _read(path: Path, problems: Problems) -> tuple[_Schema, list[Recording]]:
    schema = read_schema(_schema_path(Path(path)), problems)
    if schema.channels_dropped and not schema.channels:  # no channel left to read the files against
        return schema, []
    tables = []
    for session in schema.sessions:
        with problems.each():
            tables.append(_read_session(session, schema))
    class_names, null_class = _class_names(schema, tables)
    channels = tuple(c.spec for c in schema.channels)
    recordings = []
    for table in tables:
        with problems.each():
            recordings.append(Recording(
                signals=table.signals, channels=channels, labels=_codes(table, class_names, schema),
                class_names=class_names, subject=table.session.subject, session=table.session.session,
                rate_hz=schema.rate_hz, null_class=null_class, annotations=table.annotations,
                interpolated_samples=table.interpolated, source=str(table.session.file)))
    return schema, recordings


def load_generic(path: Path) -> list[Recording]:
    """Read a generic dataset: `path` is its folder or its dataset.yaml. Returns one Recording per session."""
    return _read(Path(path), Problems(collect=False))[1]


def check_generic(path: Path) -> GenericCheck:
    """Read a generic dataset as `load_generic` does, collecting every problem instead of stopping at the first.
    A problem that leaves nothing to read on (no dataset.yaml, not YAML, a bad top-level key) is the only one."""
    problems = Problems(collect=True)
    try:
        schema, recordings = _read(Path(path), problems)
    except HarkdError as exc:
        return GenericCheck(problems=[*problems.lines, str(exc)])
    units = [(c.spec.name, c.declared_unit, c.spec.unit) for c in schema.channels]
    return GenericCheck(recordings, problems.lines, units)


def locate_generic(tree: Path) -> Path | None:
    """The folder holding dataset.yaml: `tree` itself or one of its direct subfolders; None when there is none."""
    tree = Path(tree)
    if (tree / SCHEMA_FILE).is_file():
        return tree
    found = sorted(p.parent for p in tree.glob(f"*/{SCHEMA_FILE}") if p.is_file())
    if len(found) > 1:
        raise HarkdError(f"{tree}: several folders hold a {SCHEMA_FILE} ({', '.join(p.name for p in found)}); "
                         f"point at one of them")
    return found[0] if found else None


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def write_generic(recordings: Sequence[Recording], folder: Path, fmt: str = "csv", *, name: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write recordings as a generic dataset folder (dataset.yaml + one file per session); returns the YAML path.

    Columns are named after ChannelSpec.name, labels are written as class names, and a `time` column in seconds is
    added, so that the folder documents itself and load_generic reads back the same recordings.
    """
    if fmt not in ("csv", "parquet"):
        raise HarkdError(f"write_generic: fmt must be 'csv' or 'parquet', got {fmt!r}")
    class_names = check_same_classes(recordings)
    _check_alike(recordings)
    folder = Path(folder)
    yaml_path = folder / SCHEMA_FILE
    if yaml_path.exists() and not overwrite:
        raise HarkdError(f"{yaml_path}: already exists (pass overwrite=True to replace it)")
    first = recordings[0]
    columns = [c.name for c in first.channels]
    clash = {"time", "label"} & (set(columns) | set(first.annotations)) | set(columns) & set(first.annotations)
    if clash:
        raise HarkdError(f"write_generic: column name(s) {sorted(clash)} would be used twice")

    folder.mkdir(parents=True, exist_ok=True)
    sessions = _write_session_files(recordings, folder, fmt, columns, class_names)
    schema: dict[str, Any] = {
        "name": name or folder.resolve().name,
        "rate_hz": float(first.rate_hz),
        "label_column": "label",
        "time_column": "time",
        "classes": list(class_names),
    }
    if first.null_class is not None:
        schema["null_label"] = class_names[first.null_class]
    schema["channels"] = [{"column": col, **spec.to_dict()} for col, spec in zip(columns, first.channels)]
    schema["sessions"] = sessions
    if first.annotations:
        schema["annotations"] = list(first.annotations)
    yaml_path.write_text(yaml.safe_dump(schema, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path


def _check_alike(recordings: Sequence[Recording]) -> None:
    """One dataset.yaml describes every file: the same channels, rate, null class and annotations; sessions unique."""
    first = recordings[0]
    for rec in recordings[1:]:
        for what in ("channels", "rate_hz", "null_class"):
            if getattr(rec, what) != getattr(first, what):
                raise HarkdError(f"write_generic: {rec.source or rec.session}: {what} differs from the first recording")
        if set(rec.annotations) != set(first.annotations):
            raise HarkdError(f"write_generic: {rec.source or rec.session}: annotation names differ from the first "
                             f"recording")
    twice = sorted(n for n, k in Counter(f"{r.subject}/{r.session}" for r in recordings).items() if k > 1)
    if twice:
        raise HarkdError(f"write_generic: subject/session {twice[0]!r} appears in more than one recording")


def _write_session_files(recordings: Sequence[Recording], folder: Path, fmt: str, columns: list[str],
                         class_names: Sequence[str]) -> list[dict[str, str]]:
    """One file per recording (time, channels, label names, annotations); the schema's `sessions` entries."""
    sessions, used = [], set()
    for rec in recordings:
        stem = _file_stem(f"{rec.subject}_{rec.session}")
        file, n = f"{stem}.{fmt}", 1
        while file in used:  # sanitising can map different sessions to one name
            n += 1
            file = f"{stem}_{n}.{fmt}"
        used.add(file)
        frame = pd.DataFrame({"time": np.arange(len(rec.labels)) / rec.rate_hz,
                              **{col: rec.signals[:, i] for i, col in enumerate(columns)},
                              "label": np.asarray(class_names, dtype=object)[rec.labels],
                              **rec.annotations})
        if fmt == "csv":
            frame.to_csv(folder / file, index=False)
        else:
            frame.to_parquet(folder / file, index=False)
        sessions.append({"file": file, "subject": str(rec.subject), "session": str(rec.session)})
    return sessions
