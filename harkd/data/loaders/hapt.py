"""UCI HAPT raw signals: 61 experiments, 30 subjects, a smartphone on the waist; acc (g) and gyro (rad/s) at 50 Hz.

Publisher layout `RawData/`: `acc_expXX_userYY.txt` and `gyro_expXX_userYY.txt` (space-separated x y z per row),
`labels.txt` (`experiment user activity start end`) and `activity_labels.txt` (`id NAME`, 12 classes). One Recording
per experiment: subject "user01".."user30" (the publisher's file naming; `subject_name` makes it), session "exp01".
Class names are activity_labels.txt's names as written, plus a final "null" class for the samples no label covers.

labels.txt counts samples from 1 and its `end` is inclusive: 642 pairs of adjacent segments have
end + 1 == next start and none overlap, every start is >= 1 and every end within its recording. The signals cannot tell
a one-sample shift apart (motion ramps up over many samples), so the 1-based origin is the publisher's convention.

Citation: J.-L. Reyes-Ortiz, L. Oneto, A. Samà, X. Parra, D. Anguita, "Transition-Aware Human Activity Recognition
Using Smartphones", Neurocomputing 171, 2016.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harkd.data.recording import Recording, fill_short_gaps, read_numeric_table, sensor_channels
from harkd.data.registry import DatasetSpec, Layout, WindowConfig, register_dataset
from harkd.errors import HarkdError

RATE_HZ = 50.0
CHANNELS = (*sensor_channels("waist", "acc", "g"), *sensor_channels("waist", "gyro", "rad/s"))
NULL_NAME = "null"

_ACC_FILE = re.compile(r"acc_exp(\d+)_user(\d+)\.txt")


def subject_name(user: int) -> str:
    return f"user{user:02d}"


LAYOUT = Layout("RawData/labels.txt", max_depth=2)
locate = LAYOUT.locate  # the publisher's folder in an unpacked tree, or None


def load(root: Path, max_gap_s: float = 1.0) -> list[Recording]:
    raw = Path(root) / "RawData"
    class_names = (*_activity_names(raw / "activity_labels.txt"), NULL_NAME)
    experiments = {}
    for path in raw.glob("acc_exp*_user*.txt"):
        match = _ACC_FILE.fullmatch(path.name)
        if match:
            experiments[int(match[1])] = (int(match[2]), path)
    if not experiments:
        raise HarkdError(f"{raw}: no acc_expXX_userYY.txt files; is {root} the HAPT folder?")
    segments = _read_labels(raw / "labels.txt", experiments, n_activities=len(class_names) - 1)

    recordings = []
    for experiment, (user, acc_path) in tqdm(sorted(experiments.items()), desc="hapt", unit="experiment",
                                             disable=None):
        gyro_path = acc_path.with_name("gyro" + acc_path.name[len("acc"):])
        acc, acc_filled = fill_short_gaps(read_numeric_table(acc_path, 3, sep=" "), RATE_HZ, str(acc_path), max_gap_s)
        gyro, gyro_filled = fill_short_gaps(read_numeric_table(gyro_path, 3, sep=" "), RATE_HZ, str(gyro_path),
                                            max_gap_s)
        if len(acc) != len(gyro):
            raise HarkdError(f"{acc_path} has {len(acc)} rows but {gyro_path} has {len(gyro)}: the acc and gyro files "
                             f"of one experiment must have one row per sample")
        labels = _label_track(len(acc), segments[experiment], len(class_names) - 1, raw / "labels.txt", acc_path)
        recordings.append(Recording(np.hstack([acc, gyro]), CHANNELS, labels, class_names, subject_name(user),
                                    f"exp{experiment:02d}", RATE_HZ, null_class=len(class_names) - 1,
                                    interpolated_samples=acc_filled + gyro_filled, source=str(acc_path)))
    return recordings


def _activity_names(path: Path) -> list[str]:
    """activity_labels.txt lists `id NAME` with ids 1..K in order; label k becomes class index k - 1."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise HarkdError(f"{path}: cannot read ({exc})") from None
    for row, fields in enumerate(lines, start=1):
        if len(fields) != 2 or fields[0] != str(row):
            raise HarkdError(f"{path}: row {row} should be '{row} NAME', got {' '.join(fields)!r}")
    if not lines:
        raise HarkdError(f"{path}: no activities")
    return [name for _, name in lines]


def _read_labels(path: Path, experiments: dict[int, tuple[int, Path]],
                 n_activities: int) -> dict[int, list[tuple[int, int, int, int]]]:
    """labels.txt rows grouped by experiment as (file row, class index, first sample, end sample), 0-based, end
    exclusive; rows naming an experiment without files, another user or an unknown activity are errors."""
    table = read_numeric_table(path, 5, sep=" ")
    if not np.array_equal(table, np.round(table)):
        raise HarkdError(f"{path}: values must be integers")
    segments: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for row, (experiment, user, activity, start, end) in enumerate(table.astype(np.int64).tolist(), start=1):
        if experiment not in experiments:
            raise HarkdError(f"{path}: row {row} labels experiment {experiment}, which has no "
                             f"acc_exp{experiment:02d}_user{user:02d}.txt")
        if user != experiments[experiment][0]:
            raise HarkdError(f"{path}: row {row} gives user {user} for experiment {experiment}, but its file is "
                             f"{experiments[experiment][1].name}")
        if not 1 <= activity <= n_activities:
            raise HarkdError(f"{path}: row {row} has activity {activity}, expected 1..{n_activities}")
        segments[experiment].append((row, activity - 1, start - 1, end))
    return segments


def _label_track(n_samples: int, segments: list[tuple[int, int, int, int]], null: int, labels_path: Path,
                 signals_path: Path) -> np.ndarray:
    labels = np.full(n_samples, null, dtype=np.int64)
    for row, activity, first, end in segments:
        if not 0 <= first < end <= n_samples:
            raise HarkdError(f"{labels_path}: row {row} labels samples {first + 1}-{end}, outside {signals_path.name} "
                             f"(samples 1-{n_samples})")
        if (labels[first:end] != null).any():
            raise HarkdError(f"{labels_path}: row {row} labels samples {first + 1}-{end} of {signals_path.name}, "
                             f"which an earlier row already labels")
        labels[first:end] = activity
    return labels


SPEC = register_dataset(DatasetSpec(
    name="hapt",
    title="UCI Smartphone-Based Recognition of Human Activities and Postural Transitions (HAPT), raw signals",
    load=load,
    layout=LAYOUT,
    default_windowing=WindowConfig(length=128, stride=64, label_rule="majority", drop_null=True),  # as UCI-HAR
    licence="CC BY 4.0",
    archives={"uci-hapt.tar.xz": "6cf9cf7efd1b010bb29b6212f6d1614196c704ea1963f61b99a9c153f74dba4f"},
    options={"max_gap_s": 1.0},
))
