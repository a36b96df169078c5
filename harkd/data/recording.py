"""The data model every loader produces: a Recording of time x channel signals with a ChannelSpec per column."""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from harkd.errors import HarkdError

@dataclass(frozen=True)
class ChannelSpec:
    """What one signal column measures: where on the body, which sensor, which axis, in which unit."""

    position: str
    modality: str
    axis: str
    unit: str
    sensor: str = ""  # device id where one position carries two devices (e.g. OpenPack's ATR and E4 on a wrist)
    # Free-text notes from the dataset's description, carried into kept models: which way the axis points
    # ("x towards the fingers") and how the sensor sits ("dorsal wrist, strap over the styloid").
    orientation: str = ""
    placement: str = ""

    @property
    def name(self) -> str:
        base = f"{self.position}/{self.modality}/{self.axis}"
        return f"{base}@{self.sensor}" if self.sensor else base

    def to_dict(self) -> dict[str, str]:
        spec = {"position": self.position, "modality": self.modality, "axis": self.axis, "unit": self.unit}
        for note in ("sensor", "orientation", "placement"):
            if getattr(self, note):
                spec[note] = getattr(self, note)
        return spec


def sensor_channels(position: str, modality: str, unit: str, axes: str | Sequence[str] = "xyz",
                    sensor: str = "") -> list[ChannelSpec]:
    """The specs of one multi-axis sensor, e.g. sensor_channels('torso', 'acc', 'm/s^2')."""
    return [ChannelSpec(position, modality, axis, unit, sensor) for axis in axes]


@dataclass(frozen=True)
class ChannelQuery:
    """Selects model inputs by position and/or modality; None means 'any'."""

    positions: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, query: "ChannelQuery | ChannelKit | Mapping | Sequence[Mapping] | str | None"
              ) -> "ChannelQuery | ChannelKit":
        """Accepts a ChannelQuery, a mapping {position: [...], modality: [...]} or 'position=a,b;modality=acc', or a
        list of mappings: a kit of several sensors worn together (their union)."""
        if query is None:
            return cls()
        if isinstance(query, (ChannelQuery, ChannelKit)):
            return query
        if isinstance(query, Sequence) and not isinstance(query, str):
            return ChannelKit.of(query)
        if isinstance(query, str):
            parsed: dict[str, list[str]] = {}
            for part in filter(None, (p.strip() for p in query.split(";"))):
                key, sep, values = part.partition("=")
                if not sep:
                    raise HarkdError(f"channel query {query!r}: expected key=value parts such as 'modality=acc'")
                parsed[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
            query = parsed
        if not isinstance(query, Mapping):
            raise HarkdError(f"channel query must be a mapping with 'position' and/or 'modality', got {query!r}")
        unknown = set(query) - {"position", "modality"}
        if unknown:
            raise HarkdError(f"channel query: unknown key(s) {sorted(unknown)}; valid keys: ['modality', 'position']")

        def as_tuple(value) -> tuple[str, ...] | None:
            if value is None:
                return None
            return (value,) if isinstance(value, str) else tuple(str(v) for v in value)

        return cls(as_tuple(query.get("position")), as_tuple(query.get("modality")))

    def indices(self, channels: Sequence[ChannelSpec]) -> list[int]:
        """Column indices of the matching channels, in column order; unknown names are errors listing what exists."""
        for wanted, attr, kind in ((self.positions, "position", "position"), (self.modalities, "modality", "modality")):
            if wanted is None:
                continue
            present = sorted({getattr(c, attr) for c in channels})
            missing = [w for w in wanted if w not in present]
            if missing:
                raise HarkdError(f"unknown {kind}(s) {missing}; this data has: {present}")
        picked = [i for i, c in enumerate(channels)
                  if (self.positions is None or c.position in self.positions)
                  and (self.modalities is None or c.modality in self.modalities)]
        if not picked:
            raise HarkdError(f"channel query {self.describe()} matches no channel "
                             f"(channels: {[c.name for c in channels]})")
        return picked

    def describe(self) -> str:
        parts = []
        if self.positions is not None:
            parts.append("position=" + ",".join(self.positions))
        if self.modalities is not None:
            parts.append("modality=" + ",".join(self.modalities))
        return ";".join(parts) or "all"


@dataclass(frozen=True)
class ChannelKit:
    """Several channel queries worn together, e.g. the right arm's acc and gyro with the torso's acc (one query is a
    cross product of positions and modalities, so a kit with other modalities at each position needs several)."""

    parts: tuple[ChannelQuery, ...]

    @classmethod
    def of(cls, queries: Sequence) -> "ChannelKit":
        parts = tuple(ChannelQuery.parse(q) for q in queries)
        if not parts or any(isinstance(p, ChannelKit) for p in parts):
            raise HarkdError(f"channel kit: expected a non-empty list of mappings with 'position' and/or 'modality', "
                             f"got {list(queries)!r}")
        return cls(parts)

    def indices(self, channels: Sequence[ChannelSpec]) -> list[int]:
        """The union of the parts' columns, in column order."""
        return sorted({i for part in self.parts for i in part.indices(channels)})

    def describe(self) -> str:
        return " + ".join(part.describe() for part in self.parts)


@dataclass
class Recording:
    """One session of one subject: signals (time x channels, float32) and one integer label per sample.

    `labels` index into `class_names`; `null_class` is the index of the class that means "no activity" (OpenPack's
    Null, HAPT's unlabelled stretches) or None when every sample is an activity. `annotations` holds further
    per-sample integer tracks (e.g. OpenPack's box number) that splits may group by.
    """

    signals: np.ndarray
    channels: tuple[ChannelSpec, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    subject: str
    session: str
    rate_hz: float
    null_class: int | None = None
    annotations: dict[str, np.ndarray] = field(default_factory=dict)
    interpolated_samples: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        self.signals = np.asarray(self.signals, dtype=np.float32)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.channels = tuple(self.channels)
        self.class_names = tuple(self.class_names)
        where = self.source or f"{self.subject}/{self.session}"
        if self.signals.ndim != 2 or self.signals.shape[1] != len(self.channels):
            raise HarkdError(f"{where}: signals of shape {self.signals.shape} do not match "
                             f"{len(self.channels)} channel specs")
        if self.labels.shape != (self.signals.shape[0],):
            raise HarkdError(f"{where}: {self.labels.shape[0]} labels for {self.signals.shape[0]} samples")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise HarkdError(f"{where}: labels outside 0..{len(self.class_names) - 1}")
        for name, track in self.annotations.items():
            if len(track) != len(self.labels):
                raise HarkdError(f"{where}: annotation {name!r} has {len(track)} values for {len(self.labels)} samples")

    @property
    def duration_s(self) -> float:
        return self.signals.shape[0] / self.rate_hz

    def select(self, query: ChannelQuery | Mapping | str | None) -> "Recording":
        idx = ChannelQuery.parse(query).indices(self.channels)
        return replace(self, signals=self.signals[:, idx], channels=tuple(self.channels[i] for i in idx))

    def labelled_segments(self) -> int:
        """Maximal runs of one non-null label."""
        if not self.labels.size:
            return 0
        starts = np.flatnonzero(np.diff(self.labels, prepend=self.labels[0] - 1))
        return int(sum(1 for s in starts if self.labels[s] != self.null_class))


def max_gap_samples(max_gap_s: float, rate_hz: float) -> int:
    """The longest NaN run (in samples) that may be interpolated: max_gap_s at the rate, at least one sample."""
    return max(1, int(round(max_gap_s * rate_hz)))


def fill_short_gaps(signals: np.ndarray, rate_hz: float, where: str, max_gap_s: float = 1.0, first_row: int = 1,
                    columns: Sequence[str] | None = None, rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Linearly interpolate NaN runs of at most `max_gap_s` per channel; longer runs are an error.

    Returns the filled signals and how many values were interpolated. The error names the rows as the user sees them
    in the file: `rows[i]` is the file row of signals[i] (default: first_row + i), and the column by its name in
    `columns` (default: its index).
    """
    nan = np.isnan(signals)
    if not nan.any():
        return signals, 0
    max_gap = max_gap_samples(max_gap_s, rate_hz)
    rows = np.arange(signals.shape[0]) + first_row if rows is None else rows
    filled = signals.copy()
    t = np.arange(signals.shape[0])
    for c in np.flatnonzero(nan.any(axis=0)):
        name = repr(columns[c]) if columns is not None else str(c)
        col_nan = nan[:, c]
        if col_nan.all():
            raise HarkdError(f"{where}: column {name} has no value at all")
        edges = np.diff(np.concatenate([[0], col_nan.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = int(np.argmax(ends - starts))
        length = int(ends[longest] - starts[longest])
        if length > max_gap:
            raise HarkdError(f"{where}: rows {rows[starts[longest]]}-{rows[ends[longest] - 1]}: column {name} is "
                             f"missing (NaN) for {length} samples, more than the {max_gap} that may be interpolated "
                             f"(max_gap_s = {max_gap_s:g} s)")
        good = ~col_nan
        filled[col_nan, c] = np.interp(t[col_nan], t[good], signals[good, c])
    return filled, int(nan.sum())


def check_same_classes(recordings: Iterable[Recording]) -> tuple[str, ...]:
    """All recordings of a dataset must share one class list; returns it."""
    names: tuple[str, ...] | None = None
    for rec in recordings:
        if names is None:
            names = rec.class_names
        elif rec.class_names != names:
            raise HarkdError(f"{rec.source or rec.session}: class list differs from the other recordings")
    if names is None:
        raise HarkdError("no recordings")
    return names


def read_numeric_table(path: Path, n_columns: int, *, sep: str = ",", header: bool = False) -> np.ndarray:
    """Read a delimited numeric text file (one row per line) into float64, checking every row's field count.

    Empty fields and 'nan' become NaN (loaders interpolate short gaps); a row with the wrong number of fields (e.g. a
    truncated file) or a non-numeric value is an error naming the file and row. `sep=" "` means any whitespace.
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise HarkdError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarkdError(f"{path}: cannot read ({exc})") from None
    lines = text.splitlines()
    first = 1 if header else 0
    for i in range(first, len(lines)):
        line = lines[i]
        n_fields = len(line.split()) if sep == " " else line.count(sep) + 1
        if n_fields != n_columns and line.strip():
            raise HarkdError(f"{path}: row {i + 1} has {n_fields} fields, expected {n_columns} "
                             f"(truncated or malformed file)")
    try:
        table = pd.read_csv(io.StringIO(text), header=None, skiprows=first, sep=r"\s+" if sep == " " else sep,
                            dtype=np.float64, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise HarkdError(f"{path}: no data rows") from None
    except ValueError as exc:
        raise HarkdError(f"{path}: non-numeric value ({exc})") from None
    if table.empty:
        raise HarkdError(f"{path}: no data rows")
    return table.to_numpy()
