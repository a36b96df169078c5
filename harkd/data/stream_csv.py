"""Recordings as the CSV `harkd stream` reads: a `time` column in seconds, one column per channel by name
(`right_arm/acc/x`, ...), in the dataset's units, and the true `label` (which the stream ignores), the recordings one
after another with time running on, so they stream as one session."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from harkd.data.recording import ChannelQuery, Recording
from harkd.errors import HarkdError
from harkd.files import atomic_output


def write_stream_csv(recordings: Sequence[Recording], path: Path, channels: str | None = None) -> int:
    """Write `recordings` (their `channels`, a channel query such as 'position=right_arm;modality=acc', default all)
    to `path`; return the number of samples."""
    if not recordings:
        raise HarkdError(f"{path}: no recordings to write")
    parts = [r.select(ChannelQuery.parse(channels)) if channels else r for r in recordings]
    names = [c.name for c in parts[0].channels]
    if not names:
        raise HarkdError(f"--channels {channels!r} matches no channel of the recordings")
    rate = parts[0].rate_hz
    values = np.concatenate([p.signals for p in parts])
    labels = np.concatenate([np.asarray(p.class_names + ("",))[np.where(p.labels >= 0, p.labels, len(p.class_names))]
                             for p in parts])
    table = pd.DataFrame(values, columns=names)
    table.insert(0, "time", np.round(np.arange(len(values)) / rate, 6))
    table["label"] = labels
    with atomic_output(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return len(values)
