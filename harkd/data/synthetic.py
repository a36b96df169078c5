"""Seeded synthetic recordings for unit tests: multi-position IMU + capacitive signals with learnable class patterns.

Every class has its own motion per position and sensor (orientation, dominant frequency, amplitude and phase per
axis) and its own contact level per capacitive channel, held over segments of a few seconds with short Null
segments in between. Subjects differ in tempo, per-channel gain and offset and noise, so a classifier has to
generalise across subjects, yet simple window statistics still separate the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy.ndimage import uniform_filter1d

from harkd.data.recording import Recording, sensor_channels
from harkd.errors import HarkdError


@dataclass(frozen=True)
class _Sensor:
    axes: str
    unit: str
    rest: float  # resting reading: magnitude of gravity / earth field / unit quaternion, or the capacitive baseline
    direction: bool  # the level is a direction of magnitude `rest` (an orientation)
    amplitude: tuple[float, float]  # range of the class-dependent oscillation amplitude
    offset_sd: float  # subject-specific offset per channel (mounting, calibration)
    noise: float


_SENSORS = {
    "acc": _Sensor("xyz", "m/s^2", 9.81, True, (0.5, 4.0), 4.0, 1.5),
    "gyro": _Sensor("xyz", "rad/s", 0.0, False, (0.3, 2.5), 0.4, 0.5),
    "mag": _Sensor("xyz", "uT", 40.0, True, (2.0, 10.0), 4.0, 1.5),
    "quat": _Sensor("wxyz", "1", 1.0, True, (0.05, 0.3), 0.05, 0.01),
    "capacitive": _Sensor("12", "pF", 8.0, False, (0.0, 6.0), 2.0, 0.5),
}
_SEGMENT_S = 4.0  # mean activity segment length
_CONTACT_SMOOTHING_S = 0.4  # capacitive contact builds up and releases smoothly
_NULL_AMPLITUDE = 0.15  # Null is near-rest fidgeting
_CLASS_CONTRAST = 0.6  # classes share part of their motion, so that subject effects blur them


@dataclass(frozen=True)
class _Pattern:
    """One class's signal on one sensor: level + amplitude * sin(2 pi freq t + phase) per axis."""

    level: np.ndarray
    amplitude: np.ndarray
    freq: float
    phase: np.ndarray


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=n)
    return v / np.linalg.norm(v)


def _pattern(rng: np.random.Generator, sensor: _Sensor, modality: str) -> _Pattern:
    n = len(sensor.axes)
    if modality == "capacitive":
        # Contact level per pad, no oscillation beyond a slight grip tremor.
        return _Pattern(sensor.rest + rng.uniform(*sensor.amplitude, size=n), np.full(n, 0.1),
                        rng.uniform(3.0, 6.0), rng.uniform(0, 2 * np.pi, size=n))
    level = sensor.rest * _unit(rng, n) if sensor.direction else rng.normal(0, 0.3, size=n)
    return _Pattern(level, rng.uniform(*sensor.amplitude, size=n), rng.uniform(0.5, 3.0),
                    rng.uniform(0, 2 * np.pi, size=n))


def _blend(base: _Pattern, own: _Pattern, sensor: _Sensor) -> _Pattern:
    """A class pattern `_CLASS_CONTRAST` of the way from the pattern all classes share to its own one."""
    def mix(a, b):
        return (1 - _CLASS_CONTRAST) * a + _CLASS_CONTRAST * b

    level = mix(base.level, own.level)
    if sensor.direction:  # orientations keep the magnitude of gravity / the earth field
        level = sensor.rest * level / np.linalg.norm(level)
    return _Pattern(level, mix(base.amplitude, own.amplitude), mix(base.freq, own.freq), own.phase)


def _split(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
    """`parts` integer lengths summing to `total`, each within about 0.5-1.5x of the mean."""
    bounds = np.cumsum(rng.uniform(0.5, 1.5, size=parts))
    bounds = np.round(bounds / bounds[-1] * total).astype(int)
    return np.diff(bounds, prepend=0)


def _layout(n: int, n_classes: int, null_fraction: float, rate_hz: float,
            rng: np.random.Generator) -> list[tuple[int, int]]:
    """(label, length) segments: every class at least once in shuffled rounds, a Null stretch before each activity.

    Label n_classes stands for Null; Null stretches share the null_fraction of the samples.
    """
    n_active = n - int(round(n * null_fraction))
    n_segments = max(n_classes, int(round(n_active / rate_hz / _SEGMENT_S)))
    order = np.concatenate([rng.permutation(n_classes) for _ in range(-(-n_segments // n_classes))])[:n_segments]
    active = _split(n_active, n_segments, rng)
    idle = _split(n - n_active, n_segments, rng)
    return [(label, int(length)) for k, n_idle, n_act in zip(order, idle, active)
            for label, length in ((n_classes, n_idle), (int(k), n_act)) if length]


def _render(layout: list[tuple[int, int]], patterns: list[list[_Pattern]], rest: list[_Pattern],
            sensors: list[tuple[str, str]], spans: np.ndarray, tempo: float, rate_hz: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free signals (samples x channels) and labels of one session."""
    n = sum(length for _, length in layout)
    labels = np.empty(n, np.int64)
    clean = np.empty((n, spans[-1]))
    t = np.arange(n)[:, None] / rate_hz
    start = 0
    for label, length in layout:
        seg = slice(start, start + length)
        for i in range(len(sensors)):
            if label < len(patterns):
                p = patterns[label][i]
                amplitude, freq = p.amplitude, p.freq * tempo
            else:  # Null: near rest, fidgeting at a random pace
                p = rest[i]
                amplitude, freq = p.amplitude * _NULL_AMPLITUDE, rng.uniform(0.3, 2.0)
            clean[seg, spans[i]:spans[i + 1]] = p.level + amplitude * np.sin(2 * np.pi * freq * t[seg] + p.phase)
        labels[seg] = label
        start += length
    for i, (_, modality) in enumerate(sensors):
        if modality == "capacitive":
            cols = slice(spans[i], spans[i + 1])
            clean[:, cols] = uniform_filter1d(clean[:, cols], max(1, int(_CONTACT_SMOOTHING_S * rate_hz)), axis=0,
                                              mode="nearest")
    return clean, labels


def _check_args(n_subjects: int, sessions_per_subject: int, n_classes: int, duration_s: float, rate_hz: float,
                positions: Sequence[str], modalities: Sequence[str], null_fraction: float) -> None:
    if n_subjects < 1 or sessions_per_subject < 1 or n_classes < 1:
        raise HarkdError("make_recordings: n_subjects, sessions_per_subject and n_classes must be at least 1")
    if duration_s <= 0 or rate_hz <= 0:
        raise HarkdError("make_recordings: duration_s and rate_hz must be positive")
    if not 0 <= null_fraction < 1:
        raise HarkdError(f"make_recordings: null_fraction must be in [0, 1), got {null_fraction}")
    if not positions or len(set(positions)) != len(positions):
        raise HarkdError(f"make_recordings: positions must be a non-empty list without repeats, got {positions}")
    unknown = [m for m in modalities if m not in _SENSORS]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise HarkdError(f"make_recordings: modalities must be distinct names from {sorted(_SENSORS)}, "
                         f"got {modalities}")
    if duration_s * (1 - null_fraction) < n_classes:
        raise HarkdError(f"make_recordings: {duration_s} s cannot hold {n_classes} classes of at least 1 s each")


def make_recordings(n_subjects: int = 4, sessions_per_subject: int = 1, n_classes: int = 5, duration_s: float = 60,
                    rate_hz: float = 50, positions: Sequence[str] = ("right_wrist", "left_wrist"),
                    modalities: Sequence[str] = ("acc", "gyro", "capacitive"), null_fraction: float = 0.1,
                    seed: int = 0) -> list[Recording]:
    """Synthetic recordings, one per subject and session; the same arguments always give the same arrays.

    Channels: every modality at every position (3 axes for acc/gyro/mag, wxyz for quat, pads '1' and '2' for
    capacitive). Classes are 'class_0'.. plus 'null' (the null class) when null_fraction > 0; every recording holds
    every activity class, in segments of about 2-6 s.
    """
    _check_args(n_subjects, sessions_per_subject, n_classes, duration_s, rate_hz, positions, modalities,
                null_fraction)
    sensors = [(p, m) for p in positions for m in modalities]
    channels = tuple(c for p, m in sensors for c in sensor_channels(p, m, _SENSORS[m].unit, _SENSORS[m].axes))
    spans = np.cumsum([0] + [len(_SENSORS[m].axes) for _, m in sensors])
    null_class = n_classes if null_fraction > 0 else None
    class_names = tuple(f"class_{k}" for k in range(n_classes)) + (("null",) if null_class is not None else ())

    # Independent streams: the class patterns are shared by all subjects; each subject and session has its own.
    pattern_seq, *subject_seqs = np.random.SeedSequence(seed).spawn(1 + n_subjects)
    patterns, rest = _class_patterns(np.random.default_rng(pattern_seq), sensors, n_classes)
    quats = [slice(spans[i], spans[i + 1]) for i, (_, m) in enumerate(sensors) if m == "quat"]

    recordings = []
    for s, subject_seq in enumerate(subject_seqs):
        subject_param_seq, *session_seqs = subject_seq.spawn(1 + sessions_per_subject)
        tempo, gain, offset, noise = _subject_traits(np.random.default_rng(subject_param_seq), sensors, spans)
        for j, session_seq in enumerate(session_seqs):
            rng = np.random.default_rng(session_seq)
            layout = _layout(int(round(duration_s * rate_hz)), n_classes, null_fraction, rate_hz, rng)
            clean, labels = _render(layout, patterns, rest, sensors, spans, tempo, rate_hz, rng)
            signals = clean * gain + offset + rng.normal(size=clean.shape) * noise
            for cols in quats:  # orientations stay unit quaternions after gain, offset and noise
                signals[:, cols] /= np.linalg.norm(signals[:, cols], axis=1, keepdims=True)
            subject, session = f"S{s + 1:02d}", f"s{j + 1}"
            recordings.append(Recording(signals=signals, channels=channels, labels=labels, class_names=class_names,
                                        subject=subject, session=session, rate_hz=float(rate_hz),
                                        null_class=null_class, source=f"synthetic:seed={seed}/{subject}/{session}"))
    return recordings


def _subject_traits(rng: np.random.Generator, sensors: list[tuple[str, str]], spans: np.ndarray) -> tuple:
    """A subject's tempo, and per channel its gain, offset and noise level, drawn in this order from `rng`."""
    tempo = rng.uniform(0.85, 1.15)
    gain = rng.normal(1.0, 0.25, size=int(spans[-1]))
    offset = np.concatenate([rng.normal(0, _SENSORS[m].offset_sd, size=len(_SENSORS[m].axes)) for _, m in sensors])
    noise = np.repeat([_SENSORS[m].noise for _, m in sensors], np.diff(spans)) * rng.uniform(0.8, 1.2)
    return tempo, gain, offset, noise


def _class_patterns(rng: np.random.Generator, sensors: list[tuple[str, str]], n_classes: int) -> tuple[list, list]:
    """Each class's pattern per sensor (a blend of one shared by every class with its own) and the rest pattern
    (a capacitive pad at rest touches nothing), drawn in this order from `rng`."""
    shared = [_pattern(rng, _SENSORS[m], m) for _, m in sensors]
    patterns = [[_blend(base, _pattern(rng, _SENSORS[m], m), _SENSORS[m]) for base, (_, m) in zip(shared, sensors)]
                for _ in range(n_classes)]
    rest = [_pattern(rng, _SENSORS[m], m) for _, m in sensors]
    rest = [replace(p, level=np.full(len(p.level), _SENSORS[m].rest)) if m == "capacitive" else p
            for p, (_, m) in zip(rest, sensors)]
    return patterns, rest
