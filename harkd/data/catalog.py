"""Load installed datasets by name, with an on-disk cache so text is parsed once per install and option set."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harkd import __version__
from harkd.data.install import INSTALL_MARKER, content_fingerprint, data_root, installed_path, read_dataset
from harkd.data.recording import ChannelSpec, Recording, check_same_classes
from harkd.data.registry import WindowConfig, dataset_names, get_dataset
from harkd.data.windowing import WindowSet, make_windows
from harkd.files import atomic_output

# Bump when loaders or windowing change what they produce, so stale caches are never read.
CACHE_FORMAT = 1


def _cache_file(kind: str, name: str, path: Path, options: Mapping[str, Any], extra: Mapping[str, Any]) -> Path:
    install = json.loads((path / INSTALL_MARKER).read_text())
    key = {"kind": kind, "name": name, "sha256": install.get("sha256"), "installed_at": install.get("installed_at"),
           "options": dict(options), "extra": dict(extra), "format": CACHE_FORMAT, "version": __version__}
    # The files as they are now: an installed copy edited after install is read again, never served stale. Installs
    # of registered datasets older than the fingerprint keep their key (and cache).
    if "content" in install or install.get("format") == "generic":
        key["content"] = content_fingerprint(path)
    key = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return path.parent / ".cache" / f"{name}-{kind}-{digest}.npz"


def _write_atomic(target: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_output(target) as tmp, open(tmp, "wb") as stream:  # a stream: np.savez would add .npz to a name
        np.savez(stream, **arrays)


def _read_cache(target: Path) -> dict[str, np.ndarray] | None:
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # a damaged cache is rebuilt, never trusted


def _pack_recordings(recordings: list[Recording]) -> dict[str, np.ndarray]:
    first = recordings[0]
    meta = {"channels": [c.to_dict() for c in first.channels], "class_names": list(check_same_classes(recordings)),
            "null_class": first.null_class, "annotations": sorted(first.annotations)}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "signals": np.concatenate([r.signals for r in recordings]),
        "labels": np.concatenate([r.labels for r in recordings]),
        "lengths": np.array([len(r.labels) for r in recordings]),
        "subjects": np.array([r.subject for r in recordings]),
        "sessions": np.array([r.session for r in recordings]),
        "sources": np.array([r.source for r in recordings]),
        "rates": np.array([r.rate_hz for r in recordings]),
        "interpolated": np.array([r.interpolated_samples for r in recordings]),
    }
    for name in meta["annotations"]:
        arrays[f"annotation_{name}"] = np.concatenate([r.annotations[name] for r in recordings])
    return arrays


def _unpack_recordings(arrays: Mapping[str, np.ndarray]) -> list[Recording]:
    meta = json.loads(str(arrays["meta"]))
    channels = tuple(ChannelSpec(**c) for c in meta["channels"])
    bounds = np.concatenate([[0], np.cumsum(arrays["lengths"])])
    recordings = []
    for i in range(len(arrays["lengths"])):
        part = slice(bounds[i], bounds[i + 1])
        recordings.append(Recording(
            signals=arrays["signals"][part], channels=channels, labels=arrays["labels"][part],
            class_names=tuple(meta["class_names"]), subject=str(arrays["subjects"][i]),
            session=str(arrays["sessions"][i]), rate_hz=float(arrays["rates"][i]), null_class=meta["null_class"],
            annotations={n: arrays[f"annotation_{n}"][part] for n in meta["annotations"]},
            interpolated_samples=int(arrays["interpolated"][i]), source=str(arrays["sources"][i])))
    return recordings


def load_recordings(name: str, options: Mapping[str, Any] | None = None, *, root: Path | None = None,
                    cache: bool = True) -> list[Recording]:
    """The recordings of an installed dataset; parsed text is cached beside the data."""
    options = dict(options or {})
    path = installed_path(name, root)
    target = _cache_file("recordings", name, path, options, {})
    if cache and (arrays := _read_cache(target)) is not None:
        return _unpack_recordings(arrays)
    recordings = read_dataset(name, path, options)
    if cache:
        _write_atomic(target, _pack_recordings(recordings))
    return recordings


def default_windowing(name: str, root: Path | None = None) -> WindowConfig:
    """The publisher-appropriate windowing of a registered dataset; for the generic format 2 s windows with 50%
    overlap at the declared rate (our default, common in wearable HAR), majority label, Null dropped."""
    if name in dataset_names():
        return get_dataset(name).default_windowing
    return generic_windowing(load_recordings(name, root=root)[0].rate_hz)


def generic_windowing(rate_hz: float) -> WindowConfig:
    """2 s windows with 50% overlap at `rate_hz`."""
    length = max(1, round(2.0 * rate_hz))
    return WindowConfig(length=length, stride=max(1, length // 2))


def load_windows(name: str, windowing: WindowConfig | None = None, options: Mapping[str, Any] | None = None, *,
                 root: Path | None = None, cache: bool = True) -> WindowSet:
    """Windows of an installed dataset, from the window cache when the same parameters were used before."""
    options = dict(options or {})
    windowing = windowing or default_windowing(name, root)
    path = installed_path(name, root)
    target = _cache_file("windows", name, path, options, windowing.__dict__)
    if cache and (arrays := _read_cache(target)) is not None:
        meta = json.loads(str(arrays["meta"]))
        return WindowSet(x=arrays["x"], y=arrays["y"], subjects=arrays["subjects"], sessions=arrays["sessions"],
                         channels=tuple(ChannelSpec(**c) for c in meta["channels"]),
                         class_names=tuple(meta["class_names"]), rate_hz=meta["rate_hz"],
                         null_class=meta["null_class"],
                         annotations={n: arrays[f"annotation_{n}"] for n in meta["annotations"]})
    windows = make_windows(load_recordings(name, options, root=root, cache=cache), windowing)
    if cache:
        meta = {"channels": [c.to_dict() for c in windows.channels], "class_names": list(windows.class_names),
                "rate_hz": windows.rate_hz, "null_class": windows.null_class,
                "annotations": sorted(windows.annotations)}
        _write_atomic(target, {"meta": np.array(json.dumps(meta)), "x": windows.x, "y": windows.y,
                               "subjects": windows.subjects, "sessions": windows.sessions,
                               **{f"annotation_{n}": v for n, v in windows.annotations.items()}})
    return windows


def summarise(name: str, *, root: Path | None = None) -> dict[str, Any]:
    """What `harkd data info` prints: subjects, classes with counts, channels, duration, default windows."""
    recordings = load_recordings(name, root=root)
    windowing = default_windowing(name, root)
    return {"name": name, "path": str(installed_path(name, root)),
            "licence": get_dataset(name).licence if name in dataset_names() else None,  # the generic format's: unknown
            **describe(recordings, windowing, load_windows(name, windowing, root=root))}


def _subjects(recordings: list[Recording], class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per subject (sorted): recordings, duration, the classes present (in class order) and labelled segments."""
    subjects: dict[str, dict[str, Any]] = {}
    for rec in recordings:
        entry = subjects.setdefault(rec.subject, {"subject": rec.subject, "recordings": 0, "duration_s": 0.0,
                                                   "classes_present": set(), "labelled_segments": 0})
        entry["recordings"] += 1
        entry["duration_s"] += rec.duration_s
        entry["classes_present"] |= {class_names[c] for c in np.unique(rec.labels) if c != rec.null_class}
        entry["labelled_segments"] += rec.labelled_segments()
    for entry in subjects.values():
        entry["classes_present"] = sorted(entry["classes_present"], key=class_names.index)
    return sorted(subjects.values(), key=lambda e: e["subject"])


def describe(recordings: list[Recording], windowing: WindowConfig, windows: WindowSet | None) -> dict[str, Any]:
    """Subjects, classes with sample and window counts, channels with units, duration and windows of recordings
    (`windows`: theirs under `windowing`; None when no recording is one window long)."""
    class_names = check_same_classes(recordings)
    first = recordings[0]
    sample_counts = np.bincount(np.concatenate([r.labels for r in recordings]), minlength=len(class_names))
    window_counts = windows.class_counts() if windows is not None else dict.fromkeys(class_names, 0)
    subjects = _subjects(recordings, class_names)
    return {
        "recordings": len(recordings),
        "n_subjects": len(subjects),
        "subjects": subjects,
        "n_classes": len(class_names) - (first.null_class is not None),
        "null_class": None if first.null_class is None else class_names[first.null_class],
        "classes": [{"name": c, "samples": int(sample_counts[i]), "windows": window_counts[c]}
                    for i, c in enumerate(class_names)],
        "n_channels": len(first.channels),
        "channels": [{"name": c.name, **c.to_dict()} for c in first.channels],
        "sensors": sorted({c.sensor for c in first.channels if c.sensor}),
        "positions": sorted({c.position for c in first.channels}),
        "modalities": sorted({c.modality for c in first.channels}),
        "units": {m: sorted({c.unit for c in first.channels if c.modality == m})
                  for m in sorted({c.modality for c in first.channels})},
        "rate_hz": first.rate_hz,
        "duration_s": round(sum(r.duration_s for r in recordings), 3),
        "labelled_segments": sum(e["labelled_segments"] for e in subjects),
        "interpolated_samples": sum(r.interpolated_samples for r in recordings),
        "windowing": windowing.__dict__,
        "windows": len(windows) if windows is not None else 0,
    }


__all__ = ["load_recordings", "load_windows", "summarise", "describe", "default_windowing", "data_root"]
