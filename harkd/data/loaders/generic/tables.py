"""Session files (CSV or Parquet) read against a dataset.yaml's Schema: every problem one line naming the file, row
and column."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harkd.data.loaders.generic.schema import Schema, Session
from harkd.data.recording import fill_short_gaps
from harkd.errors import HarkdError

RATE_TOLERANCE = 0.05
# Tokens read as a missing value in numeric CSV columns; the label column keeps every value as text, so that labels
# such as 'null' or 'None' stay labels.
NA_TOKENS = ["", "nan", "NaN", "NA", "N/A", "null", "NULL"]


@dataclass
class Table:
    """One session file read and checked, with labels still as text."""

    session: Session
    signals: np.ndarray  # in the channels' stored units
    labels: np.ndarray  # str objects
    rows: np.ndarray  # the file row of every sample (rows may have been sorted by time)
    annotations: dict[str, np.ndarray]
    interpolated: int


def _needed_columns(schema: Schema, label_column: str | None) -> list[str]:
    return ([c.column for c in schema.channels] + ([label_column] if label_column else [])
            + ([schema.time_column] if schema.time_column else []) + list(schema.annotations))


def _check_header(header: Sequence[str], columns: Sequence[str], schema: Schema, path: Path) -> None:
    for column in columns:
        if column not in header:
            shown = ", ".join(map(repr, header[:30])) + (", ..." if len(header) > 30 else "")
            raise HarkdError(f"{path}: column {column!r} named in {Path(schema.where).name} is missing; "
                             f"the file has columns: {shown}")


def _read_csv(path: Path, schema: Schema, label_column: str | None) -> pd.DataFrame:
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
                       keep_default_na=False, na_values={c: NA_TOKENS for c in numeric}, low_memory=False)


def _read_parquet(path: Path, schema: Schema, label_column: str | None) -> pd.DataFrame:
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


def _time_seconds(frame: pd.DataFrame, schema: Schema, path: Path, first_row: int) -> np.ndarray:
    values = frame[schema.time_column]
    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet timestamps carry their own unit
        seconds = values.to_numpy("datetime64[ns]").astype(np.int64) * 1e-9
        seconds[values.isna().to_numpy()] = np.nan
        return seconds
    return _numeric(frame, schema.time_column, path, first_row) * schema.time_scale


def _check_timing(time: np.ndarray, rows: np.ndarray, schema: Schema, path: Path) -> None:
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


def read_session(session: Session, schema: Schema) -> Table:
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
    return Table(session, signals, labels, rows, annotations, interpolated)
