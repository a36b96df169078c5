"""Do the numbers look like the units they are declared in? Motion sensors carry their own reference: an
accelerometer at rest reads 1 g whatever its unit, human motion turns a gyroscope at a few rad/s, and a magnetometer
reads the Earth's field (25-65 uT). A wrong unit (g declared as m/s^2) passes every format check and then trains a
model that predicts one class for everything; this check names the channels, what they read, the unit they look
like and the line to change.

It runs on stretches of samples (stretches, channels, time): `harkd data check` cuts recordings into 1 s stretches,
training checks its windows, a stream its first minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from harkd.data.recording import ChannelSpec, Recording
from harkd.data.units import SI_UNITS, STANDARD_GRAVITY, conversion_factor, known_units
from harkd.errors import HarkdError

STILL_CV = 0.05  # a stretch is still when its acceleration magnitude varies by less than this share of its mean
MIN_STILL = 5  # fewer still stretches than this: the median over all samples stands in for rest
MAX_STRETCHES = 20_000  # enough for a median; more only costs time
GYRO_AT_REST = 0.6  # rad/s (34 deg/s; OpenPack's wrists read 0.25 while handling parts): the most a gyroscope
# may read (median) while its position's accelerometer is still


def _still(magnitude: np.ndarray) -> np.ndarray:
    """Stretches in which an accelerometer's magnitude hardly varies: the sensor is at rest (whatever the unit)."""
    return magnitude.std(axis=1) < STILL_CV * np.abs(magnitude.mean(axis=1))


def _rest_magnitude(magnitude: np.ndarray) -> tuple[float, str]:
    still = _still(magnitude)
    if still.sum() >= MIN_STILL:
        return float(np.median(magnitude.mean(axis=1)[still])), f"at rest ({int(still.sum())} still seconds)"
    return float(np.median(magnitude)), "as the median over all samples (too few still stretches)"


def _p99(magnitude: np.ndarray) -> tuple[float, str]:
    return float(np.percentile(magnitude, 99)), "at its 99th percentile"


def _median(magnitude: np.ndarray) -> tuple[float, str]:
    return float(np.median(magnitude)), "as its median magnitude"


@dataclass(frozen=True)
class Expectation:
    """What a modality's magnitude reads in its SI unit, and the range outside which its unit is suspect."""

    statistic: Callable[[np.ndarray], tuple[float, str]]  # magnitudes (stretches, time) -> value, how it was taken
    typical: float
    low: float
    high: float
    reason: str
    min_axes: int  # magnitude needs every axis (one axis of gravity reads anything from -1 to 1 g)


EXPECTATIONS = {
    "acc": Expectation(_rest_magnitude, STANDARD_GRAVITY, 0.7 * STANDARD_GRAVITY, 1.4 * STANDARD_GRAVITY,
                       "an accelerometer at rest reads 1 g (9.81 m/s^2)", 3),
    # 0.5 rad/s (29 deg/s) at the 99th percentile: any recording with some walking or handling turns faster.
    "gyro": Expectation(_p99, 3.0, 0.5, 35.0, "human motion peaks at a few rad/s (above 0.5; 35 rad/s = 2000 deg/s "
                        "is a gyroscope's largest range)", 1),
    "mag": Expectation(_median, 45.0, 15.0, 120.0, "the Earth's field is 25-65 uT", 3),
}


@dataclass(frozen=True)
class Declared:
    """A channel's unit as the user wrote it, and where (`file` and key), for the line to change."""

    unit: str
    file: str
    key: str  # e.g. channels[3]
    in_yaml: bool = True  # False: a plain CSV in a model's units, which has no unit line to change


@dataclass(frozen=True)
class _Sensor:
    label: str  # e.g. right_wrist/acc
    position: str
    modality: str
    index: list[int]  # channel columns


def _sensors(channels: Sequence[ChannelSpec]) -> list[_Sensor]:
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(channels):
        if c.modality in EXPECTATIONS and conversion_factor_or_none(c.unit, c.modality) is not None:
            groups.setdefault((c.position, c.modality, c.sensor), []).append(i)
    return [_Sensor(f"{p}/{m}" + (f"@{s}" if s else ""), p, m, index) for (p, m, s), index in groups.items()
            if len(index) >= EXPECTATIONS[m].min_axes]


def conversion_factor_or_none(unit: str, modality: str) -> float | None:
    """The factor from `unit` to the modality's SI unit; None for arbitrary or unknown units (nothing to check)."""
    try:
        return conversion_factor(unit, SI_UNITS[modality], modality)
    except HarkdError:  # a.u., or a unit outside the table: the loaders have said so already
        return None


def _units_by_factor(modality: str) -> dict[str, float]:
    """One spelling per distinct unit of a modality, with its factor to SI (g and G are one unit)."""
    seen: dict[float, str] = {}
    for unit in known_units(modality):
        factor = conversion_factor_or_none(unit, modality)
        if factor is not None:
            seen.setdefault(factor, unit)
    return {unit: factor for factor, unit in seen.items()}


def _looks_like(value_si: float, declared_unit: str, modality: str) -> str | None:
    """The unit in which the declared-unit numbers would read `typical`, if one is within the expected range."""
    expectation = EXPECTATIONS[modality]
    raw = value_si / conversion_factor_or_none(declared_unit, modality)
    fits = {unit: raw * factor for unit, factor in _units_by_factor(modality).items()}
    inside = {u: v for u, v in fits.items() if expectation.low <= v <= expectation.high and u != declared_unit}
    return min(inside, key=lambda u: abs(np.log(inside[u] / expectation.typical))) if inside else None


def _message(sensor: _Sensor, value_si: float, how: str, declared: list[Declared]) -> str:
    expectation, unit = EXPECTATIONS[sensor.modality], declared[0].unit
    raw = value_si / conversion_factor_or_none(unit, sensor.modality)
    where = f"{declared[0].file}: {', '.join(d.key for d in declared)}"
    found = f"{sensor.label} reads {raw:.3g} {unit} {how}"
    guess = _looks_like(value_si, unit, sensor.modality)
    change = (f"write unit: {guess} for these channels" if declared[0].in_yaml else
              f"convert them to {unit}, or read the file through a dataset.yaml (--dataset-yaml) saying unit: {guess}")
    fix = (f"the numbers look like {guess}: {change}" if guess else
           f"no unit harkd knows fits (raw sensor counts? divide by the sensitivity first; units: "
           f"{', '.join(_units_by_factor(sensor.modality))})")
    return f"{where}: {found}, but {expectation.reason}; {fix}"


def unit_findings(stretches: np.ndarray, channels: Sequence[ChannelSpec],
                  declared: Sequence[Declared] | None = None) -> list[str]:
    """One line per sensor whose numbers do not fit its declared unit (or, for a gyroscope, do not rest when its
    position's accelerometer does). `stretches` (n, channels, time) are in the channels' units; `declared` gives the
    units the user wrote, from which the data was converted to the channels' (default: the channels' own)."""
    declared = list(declared or [Declared(c.unit, "channels", c.name) for c in channels])
    if len(stretches) > MAX_STRETCHES:  # evenly spread, so every session still counts
        stretches = stretches[np.linspace(0, len(stretches) - 1, MAX_STRETCHES).astype(int)]
    sensors = _sensors(channels)
    magnitudes = {s.label: _magnitude(stretches, channels, s) for s in sensors}
    still = {s.position: _still(magnitudes[s.label]) for s in sensors if s.modality == "acc"}
    lines = []
    for sensor in sensors:
        mine = [declared[i] for i in sensor.index]
        expectation = EXPECTATIONS[sensor.modality]
        value, how = expectation.statistic(magnitudes[sensor.label])
        if np.isfinite(value) and not expectation.low <= value <= expectation.high:
            lines.append(_message(sensor, value, how, mine))
        elif sensor.modality == "gyro" and still.get(sensor.position, np.zeros(0)).sum() >= MIN_STILL:
            lines += _restless(sensor, magnitudes[sensor.label][still[sensor.position]], mine)
    return lines


def _magnitude(stretches: np.ndarray, channels: Sequence[ChannelSpec], sensor: _Sensor) -> np.ndarray:
    """The sensor's magnitude (n, time) in its modality's SI unit."""
    to_si = np.array([conversion_factor_or_none(channels[i].unit, sensor.modality) for i in sensor.index])
    values = np.asarray(stretches[:, sensor.index, :], dtype=np.float64) * to_si[:, None]
    return np.sqrt(np.nansum(values ** 2, axis=1))


def _restless(sensor: _Sensor, at_rest: np.ndarray, declared: list[Declared]) -> list[str]:
    """A gyroscope turning while its position's accelerometer is still: a bias, or not a gyroscope."""
    value = float(np.median(at_rest))
    if value <= GYRO_AT_REST:
        return []
    unit = declared[0].unit
    raw = value / conversion_factor_or_none(unit, "gyro")
    return [f"{declared[0].file}: {', '.join(d.key for d in declared)}: {sensor.label} reads {raw:.3g} {unit} "
            f"(median) while {sensor.position}/acc is still ({len(at_rest)} seconds), but a gyroscope at rest reads "
            f"about 0; subtract its bias, or check that these columns are a gyroscope's"]


def stretches_of(recordings: Sequence[Recording], seconds: float = 1.0) -> np.ndarray:
    """Recordings cut into stretches of `seconds` (n, channels, time), no stretch across two recordings."""
    parts = []
    for rec in recordings:
        length = max(1, round(seconds * rec.rate_hz))
        n = len(rec.signals) // length
        if n:
            parts.append(rec.signals[:n * length].reshape(n, length, -1).transpose(0, 2, 1))
    return np.concatenate(parts) if parts else np.zeros((0, len(recordings[0].channels) if recordings else 0, 1))


__all__ = ["Declared", "EXPECTATIONS", "stretches_of", "unit_findings"]
