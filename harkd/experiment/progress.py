"""Progress while a run trains: every process writes what it trains (unit, model, epoch) to a small status file
after each epoch, and the run prints a line from them whenever nothing else was printed for `every` seconds, so a
long unit never leaves the terminal silent."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from harkd.train.engine import epoch_hook


@contextmanager
def unit_status(work: Path) -> Iterator[None]:
    """Within the block (one unit), every epoch of every fit in this process records in work/status/<pid> which unit
    and fit it is in (the fit's folder names both: <unit>/<fit>) and the epoch; the file goes when the block ends, so
    a process left without units is not reported as training its last one."""
    folder = work / "status"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / str(os.getpid())

    def record(workdir: Path, epoch: int, epochs: int) -> None:
        unit, *fit = workdir.relative_to(work).parts
        temp = path.with_suffix(".tmp")
        temp.write_text(f"{unit}: {'/'.join(fit)}, epoch {epoch}/{epochs}")
        os.replace(temp, path)  # the reader never sees half a line

    with epoch_hook(record):
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


class Heartbeat:
    """A thread that logs what every process trains when the run has printed nothing for `every` seconds. `log` is
    wrapped: lines printed through `heartbeat.log` reset the silence."""

    def __init__(self, work: Path, log: Callable[[str], None], prefix: Callable[[], str], every: float = 30.0):
        self.folder, self._log, self.prefix, self.every = work / "status", log, prefix, every
        self.last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def log(self, line: str) -> None:
        self.last = time.monotonic()
        self._log(line)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.every)):
            if time.monotonic() - self.last >= self.every and (training := self.training()):
                self.log(f"[{self.prefix()}] training {'; '.join(training)}")

    def training(self) -> list[str]:
        """What each process trains now, from the status files (a process between fits keeps its last line)."""
        lines = []
        for path in sorted(self.folder.glob("*[0-9]")) if self.folder.is_dir() else []:
            try:
                lines.append(path.read_text())
            except OSError:  # replaced as we read it
                continue
        return lines


__all__ = ["Heartbeat", "unit_status"]
