"""Finished (seed, fold) units of a `harkd run`, kept in OUT/.units/ as they finish, so an interrupted run (a
killed process, a session's end) resumes where it stopped: the same command trains only the units that are missing.

A unit file is written whole or not at all (write, then rename). The folder records the run's config; a rerun with
another config into the same OUT is an error rather than a silent mix of two experiments. The folder is removed once
results.json and report.md are written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harkd.errors import HarkdError
from harkd.files import atomic_output

DIRNAME = ".units"


def _write_json(path: Path, data: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data))


class UnitStore:
    """OUT/.units/: run.json (the config and each invocation's wall time) and one <seed>-<fold>.json per unit."""

    def __init__(self, out_dir: Path, config: dict):
        self.dir = Path(out_dir) / DIRNAME
        self.config = json.loads(json.dumps(config))  # as it reads back from JSON (tuples as lists)
        self.previous_s: list[float] = []

    def open(self) -> None:
        """Check a partial run found here against this run's config, or start an empty store."""
        state = self.dir / "run.json"
        if state.exists():
            try:
                saved = json.loads(state.read_text())
            except (json.JSONDecodeError, OSError) as exc:
                raise HarkdError(f"{state}: unreadable partial run ({exc}); remove {self.dir} to start afresh") \
                    from None
            if saved.get("config") != self.config:
                raise HarkdError(f"{self.dir} holds the finished units of a run with another config; use another "
                                 f"--out, or remove {self.dir} to start afresh")
            self.previous_s = [float(s) for s in saved.get("wall_time_s", [])]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.record_time(0.0)

    def record_time(self, seconds: float) -> None:
        """This invocation's wall time so far, beside the earlier invocations'."""
        _write_json(self.dir / "run.json", {"config": self.config, "wall_time_s": self.previous_s + [seconds]})

    def _path(self, seed: int, fold: str) -> Path:
        return self.dir / f"seed{seed}-{fold}.json"

    def load(self, seed: int, fold: str, build: Callable[[list, dict], Any]) -> Any | None:
        """The unit's saved result as build(rows, confusion matrices), or None if it has not finished."""
        path = self._path(seed, fold)
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text())
            return build(saved["rows"], {k: np.asarray(v) for k, v in saved["confusion"].items()})
        except (json.JSONDecodeError, KeyError, OSError) as exc:
            raise HarkdError(f"{path}: unreadable unit result ({exc}); remove the file to train the unit again") \
                from None

    def save(self, seed: int, fold: str, rows: list, confusion: dict[str, np.ndarray]) -> None:
        _write_json(self._path(seed, fold), {"rows": rows, "confusion": {k: np.asarray(v).tolist()
                                                                         for k, v in confusion.items()}})

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["UnitStore", "DIRNAME"]
