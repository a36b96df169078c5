"""Recordings written as a generic dataset folder: dataset.yaml and one file per session."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from harkd.data.loaders.generic.schema import SCHEMA_FILE
from harkd.data.recording import Recording, check_same_classes
from harkd.errors import HarkdError


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
