"""What `harkd stream` reads: a CSV, plain (a time column and the model's channels by name) or a session file of
the user's own dataset (its dataset.yaml in the file's folder or above names the columns, units and rate), chosen by
`choose_reading` and said in one line; `read_rows` parses it line by line, each bad line a one-line error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from harkd.data.plausibility import Declared
from harkd.errors import HarkdError

if TYPE_CHECKING:
    from harkd.data.loaders.generic import Schema
    from harkd.deploy.stream_model import StreamModel


NA_TOKENS = {"", "nan", "NaN", "NA", "N/A", "null", "NULL"}  # as the generic loader: a missing value


@dataclass
class InputFormat:
    """Where the time and each model channel are in the input's columns."""

    time_column: str | None  # None: no time column, samples are 1 / rate_hz apart
    time_scale: float  # seconds per time unit
    columns: list[str]  # one per model channel, in the model's order
    rate_hz: float | None  # None: measured from the first rows' times
    max_gap_s: float = 1.0
    factors: np.ndarray | None = None  # per channel, to the model's units (None: already in them)
    declared: tuple[Declared, ...] | None = None  # the input's units and where they are said (None: the model's)


def plain_format(model: StreamModel, time_column: str = "time", rate_hz: float | None = None,
                 max_gap_s: float = 1.0) -> InputFormat:
    """A CSV with a header naming `time_column` (seconds) and the model's channels (e.g. right_arm/acc/x), in any
    order, other columns ignored; or without a header, time then the channels in the model's order. Values are in
    the model's units."""
    return InputFormat(time_column, 1.0, model.channel_names, rate_hz, max_gap_s)


def own_data_format(session: Path, model: StreamModel, yaml_path: Path | None = None) -> InputFormat:
    """A session file of a dataset in harkd's own-data format, read as `yaml_path` (default: the dataset.yaml in its
    folder or above that lists it) describes it."""
    schema = named_schema(yaml_path) if yaml_path is not None else owning_schema(Path(session))[0]
    if schema is None:
        raise HarkdError(f"{session}: not a session of any dataset.yaml in its folder or above (--dataset-yaml names "
                         f"one)")
    return schema_format(schema, model)


def schema_format(schema: Schema, model: StreamModel) -> InputFormat:
    """A dataset.yaml's reading of its session files: it names the columns, their units, the time unit, the rate and
    the gap limit. Each model channel must be there; values in other units than the model's are converted (g to
    m/s^2, ...) or, where they cannot be, refused."""
    from dataclasses import replace

    from harkd.data.units import channel_factors

    by_name = {c.spec.name: c for c in schema.channels}
    missing = [name for name in model.channel_names if name not in by_name]
    if missing:
        raise HarkdError(f"{schema.where}: no channel {missing[0]} (the model reads {', '.join(model.channel_names)})")
    mine = [by_name[name] for name in model.channel_names]
    factors = channel_factors([replace(c.spec, unit=c.declared_unit) for c in mine], model.specs, schema.where)
    declared = tuple(Declared(c.declared_unit, schema.where, c.key) for c in mine)
    return InputFormat(schema.time_column, schema.time_scale, [c.column for c in mine], schema.rate_hz,
                       schema.max_gap_s, None if (factors == 1.0).all() else factors, declared)


# --- which reading: plain CSV or a session of the user's own dataset ------------------------------------------------

MAX_LEVELS_UP = 8  # folders above a session file searched for its dataset.yaml: bounded, the walk reads each found


@dataclass
class Reading:
    """How `harkd stream` reads its input, and the one line on stderr that says so."""

    spec: InputFormat
    note: str


def choose_reading(path: Path | None, model: StreamModel, plain: InputFormat, dataset_yaml: Path | None = None,
                   source: str | None = None) -> Reading:
    """The reading of `path` (None: stdin): with `dataset_yaml`, as that YAML describes its sessions; a pipe or stdin
    (read once, so its header is not peeked at) as plain; a regular file as a session of the dataset.yaml in its
    folder or above that lists it, unless its header fits only the plain reading, else as plain when its header
    fits that. Anything else is a one-line error naming both readings."""
    source = source or (str(path) if path is not None else "stdin")
    if dataset_yaml is not None:
        schema = named_schema(dataset_yaml)
        return _session_reading(schema_format(schema, model), schema, source, listed=False)
    if path is None or not path.is_file():
        return _plain_reading(plain, source, header=None, notes=[], peeked=False)
    header = header_fields(path)
    owner, notes = owning_schema(path)
    spec = _owned_spec(owner, model, header, plain) if owner is not None else None
    if spec is not None:
        return _session_reading(spec, owner, source, listed=True)
    if owner is not None:  # listed, but its header has the model's channels by name and not the YAML's columns
        notes.append(f"{_shown_path(Path(owner.where))} lists it, but its header fits a plain CSV")
    if header is None or not _missing_columns(header, plain):
        return _plain_reading(plain, source, header, notes, peeked=True)
    raise HarkdError(f"{source}: neither a plain CSV (no {', '.join(_missing_columns(header, plain))} in its "
                     f"header: {_shown_fields(header)}) nor a session of a dataset.yaml in its folder or "
                     f"above ({'; '.join(notes) or 'none found'}); write a time column and the model's channels by "
                     f"name, or pass --dataset-yaml PATH to read it as that dataset.yaml describes its sessions")


def header_fields(path: Path) -> list[str] | None:
    """The names on a file's first line; None when it holds numbers (no header: read_rows then takes time and the
    channels by position)."""
    with path.open("rb") as file:
        line = file.readline(1 << 20).decode("utf-8-sig", errors="replace")  # bounded: a binary file has no lines
    fields = [f.strip() for f in line.rstrip("\r\n").split(",")]
    return None if all(_is_number(f) for f in fields) else fields


def _missing_columns(header: list[str], spec: InputFormat) -> list[str]:
    wanted = ([spec.time_column] if spec.time_column else []) + spec.columns
    return [c for c in wanted if c not in header]


def dataset_yamls_above(path: Path) -> list[Path]:
    """Each dataset.yaml in the file's folder and the folders above it, nearest first, at most MAX_LEVELS_UP up."""
    from harkd.data.loaders.generic import SCHEMA_FILE

    folder = Path(os.path.abspath(path)).parent  # lexically, as the user names it: `..` resolved, links kept
    folders = [folder, *folder.parents][:MAX_LEVELS_UP + 1]
    return [f / SCHEMA_FILE for f in folders if (f / SCHEMA_FILE).is_file()]


def owning_schema(path: Path) -> tuple[Schema | None, list[str]]:
    """The schema of the nearest dataset.yaml above the file that lists it among its sessions (None if none does);
    and, for messages, what each other one found says."""
    from harkd.data.loaders.generic import read_schema

    target, notes = Path(path).resolve(), []
    for yaml_path in dataset_yamls_above(path):
        try:
            schema = read_schema(yaml_path)
        except HarkdError as exc:  # it may describe other files: a plain CSV under it still reads
            notes.append(f"{_shown_path(yaml_path)} cannot be read: {exc}")
            continue
        if any(Path(s.file).resolve() == target for s in schema.sessions):
            return schema, notes
        notes.append(f"{_shown_path(yaml_path)} does not list it among its sessions")
    return None, notes


def named_schema(yaml_path: Path) -> Schema:
    """The schema of a dataset.yaml given by --dataset-yaml (or of the folder holding one)."""
    from harkd.data.loaders.generic import SCHEMA_FILE, read_schema

    yaml_path = Path(yaml_path)
    if not yaml_path.exists():
        raise HarkdError(f"{yaml_path}: --dataset-yaml file not found")
    if yaml_path.is_dir() and not (yaml_path / SCHEMA_FILE).is_file():
        raise HarkdError(f"{yaml_path}: a folder without a {SCHEMA_FILE}; --dataset-yaml takes the YAML file")
    return read_schema(yaml_path / SCHEMA_FILE if yaml_path.is_dir() else yaml_path)


def _owned_spec(schema: Schema, model: StreamModel, header: list[str] | None, plain: InputFormat) -> InputFormat | None:
    """A file its dataset.yaml lists is read as the YAML says, unless its header fits only the plain reading (a plain
    CSV the sessions pattern happens to match) or it has none (session files have one)."""
    plain_fits = header is None or not _missing_columns(header, plain)
    try:
        spec = schema_format(schema, model)
    except HarkdError:
        if plain_fits:
            return None
        raise
    session_fits = header is not None and not _missing_columns(header, spec)
    return spec if session_fits or not plain_fits else None


def _session_reading(spec: InputFormat, schema: Schema, source: str, listed: bool) -> Reading:
    how = "a session of" if listed else "a session file as described by"
    converted = "" if spec.factors is None else "; values converted to the model's units"
    return Reading(spec, f"reading {source} as {how} {_shown_path(Path(schema.where))} (columns, units and rate from "
                         f"it{converted})")


def _plain_reading(spec: InputFormat, source: str, header: list[str] | None, notes: list[str], peeked: bool
                   ) -> Reading:
    if peeked and header is None:
        how = f"no header: {spec.time_column or 'no time'}, then {', '.join(spec.columns)} in this order"
    else:
        how = f"time column {spec.time_column!r}, channels by name: {', '.join(spec.columns)}"
    aside = f"; {'; '.join(notes)}" if notes else ""
    return Reading(spec, f"reading {source} as a plain CSV ({how}; values in the model's units){aside}")


def _shown_path(path: Path) -> str:
    """A path relative to the working folder when it is under it, else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative == ".." or relative.startswith(".." + os.sep) else relative


def _shown_fields(fields: list[str]) -> str:
    return ", ".join(fields[:12]) + (", ..." if len(fields) > 12 else "")


def read_rows(lines: Iterable[str], source: str, spec: InputFormat) -> Iterator[tuple[int, float, np.ndarray]]:
    """(line number, time in seconds, values per model channel) for each data line; a line with the wrong number of
    fields, a non-number or no time is a one-line error naming it. A first line of numbers means no header: then
    the time (if any) and the channels come in the model's order."""
    positions, width, row_index = None, 0, 0
    for number, line in enumerate(lines, start=1):
        fields = [f.strip() for f in line.rstrip("\r\n").split(",")]
        if positions is None:
            header = number == 1 and not all(_is_number(f) for f in fields)
            names = fields if header else ([spec.time_column] if spec.time_column else []) + spec.columns
            positions = _column_positions(names, spec, source)
            width = len(names)
            if header:
                continue
        if fields == [""]:
            continue
        if len(fields) != width:
            raise HarkdError(f"{source}: line {number} has {len(fields)} fields, expected {width}")
        values = np.array([_value(fields[p], number, spec.columns[i], source) for i, p in enumerate(positions[1:])])
        values = values if spec.factors is None else values * spec.factors
        time = row_index / (spec.rate_hz or 1.0) if positions[0] is None else \
            _value(fields[positions[0]], number, spec.time_column, source) * spec.time_scale
        if np.isnan(time):
            raise HarkdError(f"{source}: line {number}: no value in the time column {spec.time_column!r}")
        row_index += 1
        yield number, time, values


def _column_positions(names: list[str], spec: InputFormat, source: str) -> list[int | None]:
    wanted = ([spec.time_column] if spec.time_column else []) + spec.columns
    missing = [w for w in wanted if w not in names]
    if missing:
        raise HarkdError(f"{source}: no column {', '.join(missing)} in the header ({_shown_fields(names)})")
    return [names.index(spec.time_column) if spec.time_column else None] + [names.index(c) for c in spec.columns]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in NA_TOKENS
    return True


def _value(text: str, line: int, column: str, source: str) -> float:
    if text in NA_TOKENS:
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise HarkdError(f"{source}: line {line}: column {column!r} holds {text!r}, not a number") from None
