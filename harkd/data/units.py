"""Units of sensor channels: a small checked table of the units wearable sensors report, per modality.

The generic format converts every channel of a modality listed here to that modality's unit (`SI_UNITS`) when it
loads, and a kept model converts (or refuses) data in other units than it was trained on (`channel_factors`).

Why a table and not pint: pint costs about 0.6 s per process (0.37 s import + 0.24 s building its registry, measured
here), which every `harkd` command and every spawned worker would pay, and it would still need our own definitions:
in pint `g` is the gram and `G` the gauss, while accelerometers report in g (OpenPack writes `G`) and gyroscopes in
`dps`. What harkd needs is a few multiplications per modality, so the table below is the whole of it, and
tests/test_units.py checks every entry against its definition.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from harkd.data.recording import ChannelSpec
from harkd.errors import HarkdError

STANDARD_GRAVITY = 9.80665  # m/s^2 per g, exact by definition (CGPM 1901)
ARBITRARY = "a.u."  # arbitrary units (e.g. DSADS's magnetometers): kept as they are, never converted

# modality -> its SI unit (as harkd spells it) and every accepted spelling with its value in that unit
SI_UNITS = {"acc": "m/s^2", "gyro": "rad/s", "mag": "uT", "quat": "1"}
_FACTORS: Mapping[str, Mapping[str, float]] = {
    "acc": {"m/s^2": 1.0, "m/s2": 1.0, "m/s²": 1.0, "g": STANDARD_GRAVITY, "G": STANDARD_GRAVITY,
            "mg": STANDARD_GRAVITY / 1000},
    "gyro": {"rad/s": 1.0, "mrad/s": 1e-3, "deg/s": math.pi / 180, "dps": math.pi / 180, "°/s": math.pi / 180},
    # 1 gauss = 1e-4 T = 100 uT
    "mag": {"uT": 1.0, "µT": 1.0, "μT": 1.0, "nT": 1e-3, "mT": 1e3, "T": 1e6, "G": 100.0, "mG": 0.1},
    "quat": {"1": 1.0, "": 1.0},  # orientation quaternions are unitless; an omitted unit means the same
}


def known_units(modality: str) -> list[str]:
    """The spellings accepted for a modality harkd knows; empty for any other modality (free text)."""
    return [u for u in _FACTORS.get(modality, {}) if u] + ([ARBITRARY] if modality in _FACTORS else [])


def _factor(unit: str, modality: str, where: str) -> float | None:
    """The value of one `unit` in the modality's SI unit; None when it is not convertible (a.u., or a modality
    harkd has no table for: its unit is free text)."""
    if modality not in _FACTORS or unit == ARBITRARY:
        return None
    factors = _FACTORS[modality]
    if unit not in factors:
        problem = f"unknown unit {unit!r} for modality {modality!r}" if unit else f"modality {modality!r} needs a unit"
        raise HarkdError(f"{where}: {problem}; use one of {', '.join(known_units(modality))}")
    return factors[unit]


def to_si(unit: str, modality: str, where: str) -> tuple[str, float]:
    """(unit harkd stores, factor to multiply values by): the modality's SI unit and the conversion factor for a
    modality in the table; the unit as given and 1 otherwise. An unknown unit is a one-line error naming `where`."""
    factor = _factor(unit, modality, where)
    return (unit, 1.0) if factor is None else (SI_UNITS[modality], factor)


def conversion_factor(from_unit: str, to_unit: str, modality: str, where: str = "units") -> float:
    """What to multiply values in `from_unit` by to get `to_unit`; refused (one line) when they cannot convert."""
    if from_unit == to_unit:
        return 1.0
    source, target = _factor(from_unit, modality, where), _factor(to_unit, modality, where)
    if source is None or target is None:
        raise HarkdError(f"{where}: {modality} data in {from_unit or 'no unit'!r} cannot be converted to "
                         f"{to_unit or 'no unit'!r}")
    return source / target


def convert_to(values: np.ndarray, from_unit: str, to_unit: str, modality: str, where: str = "units") -> np.ndarray:
    """`values` of one `modality` in `from_unit`, expressed in `to_unit` (float64 unless no conversion is needed).

    >>> convert_to(np.array([1.0]), "g", "m/s^2", "acc")
    array([9.80665])
    """
    factor = conversion_factor(from_unit, to_unit, modality, where)
    return values if factor == 1.0 else np.asarray(values, dtype=np.float64) * factor


def channel_factors(source: Sequence[ChannelSpec], target: Sequence[ChannelSpec], where: str) -> np.ndarray:
    """Per-channel factors that take data whose channels are `source` to the units of `target` (e.g. a kept model's
    channels, in the same order): float64 (channels,), ones where the units already agree. A pair that cannot
    convert (a.u. against m/s^2, pF against nF of a modality harkd has no table for) is a one-line error naming the
    channel."""
    if len(source) != len(target):
        raise HarkdError(f"{where}: {len(source)} channels given for {len(target)}")
    return np.array([conversion_factor(s.unit, t.unit, t.modality, f"{where}: channel {t.name}")
                     for s, t in zip(source, target)], dtype=np.float64)


__all__ = ["ARBITRARY", "SI_UNITS", "STANDARD_GRAVITY", "channel_factors", "conversion_factor", "convert_to",
           "known_units", "to_si"]
