"""Published evaluation protocols recut from raw recordings: which samples, which windows, which subject split.

UCI-HAR (Anguita et al., ESANN 2013) from the HAPT raw signals: 2.56 s windows (128 samples at 50 Hz) with 50%
overlap over the six basic activities, test subjects 2, 4, 9, 10, 12, 13, 18, 20, 24 and the other 21 for training.

UCI-HAR cut its windows per activity segment, so no window straddles two activities or reaches into a transition.
A label rule cannot express that on whole recordings (a 'majority' or 'centre' window may still overlap a neighbouring
segment), so `uci_har` returns one Recording per labelled basic-activity segment; transitions and unlabelled samples
are left out, and sliding windows over these recordings start at each segment's first sample.

Window counts from the HAPT labels: 7,415 train and 2,996 test, against UCI-HAR's 7,352 and 2,947 (+0.9% and +1.7%).
The walking classes match UCI-HAR's y_train/y_test almost exactly (walking 1,722 and upstairs 1,544 equal, downstairs
1,407 against 1,406); the surplus is in the static postures (sitting 1,801 against 1,777, standing 1,979 against
1,906, laying 1,958 against 1,944). So UCI-HAR's sitting/standing/laying segments were slightly shorter than the ones
HAPT's labels.txt gives, presumably trimmed differently around the postural transitions; per subject the recut gives
3 fewer to 16 more windows. UCI-HAR also median- and low-pass-filtered the signals and split gravity from body
acceleration at 0.3 Hz; that changes the values, not the counts, and is not done here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from harkd.data.loaders.hapt import subject_name
from harkd.data.recording import Recording
from harkd.data.registry import WindowConfig
from harkd.data.windowing import make_windows
from harkd.errors import HarkdError
from harkd.registry import Registry

UCI_HAR_CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
UCI_HAR_TEST_USERS = (2, 4, 9, 10, 12, 13, 18, 20, 24)


@dataclass(frozen=True)
class Protocol:
    """Recordings to window with `windowing`, and the subjects each split takes."""

    recordings: list[Recording]
    windowing: WindowConfig
    train_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]


def uci_har(recordings: Sequence[Recording]) -> Protocol:
    """The UCI-HAR setting from the recordings of the "hapt" loader (all 30 subjects needed)."""
    n_basic = len(UCI_HAR_CLASSES)
    segments = []
    for rec in recordings:
        if rec.class_names[:n_basic] != UCI_HAR_CLASSES:
            raise HarkdError(f"{rec.source or rec.session}: UCI-HAR needs HAPT recordings, whose first classes are "
                             f"{list(UCI_HAR_CLASSES)}; got {list(rec.class_names[:n_basic])}")
        starts = np.flatnonzero(np.diff(rec.labels, prepend=-1))
        for first, end in zip(starts, [*starts[1:], len(rec.labels)]):
            if rec.labels[first] < n_basic:
                # Sessions name the 1-based inclusive sample range, as labels.txt does.
                segments.append(replace(rec, signals=rec.signals[first:end], labels=rec.labels[first:end],
                                        class_names=UCI_HAR_CLASSES, null_class=None,
                                        annotations={k: v[first:end] for k, v in rec.annotations.items()},
                                        session=f"{rec.session}/{first + 1}-{end}"))
    subjects = sorted({rec.subject for rec in recordings})
    test = tuple(subject_name(user) for user in UCI_HAR_TEST_USERS)
    missing = sorted(set(test) - set(subjects))
    if missing:
        raise HarkdError(f"UCI-HAR: test subject(s) {missing} missing from the recordings (subjects: {subjects})")
    train = tuple(s for s in subjects if s not in test)
    return Protocol(segments, WindowConfig(length=128, stride=64, label_rule="majority", drop_null=True), train, test)


@dataclass(frozen=True)
class ProtocolSpec:
    """A published protocol: the registered dataset it recuts, how, and the original release's windows per split."""

    name: str
    dataset: str
    build: Callable[[Sequence[Recording]], Protocol]
    original_windows: Mapping[str, int]


_PROTOCOLS: Registry[ProtocolSpec] = Registry("protocol", "protocols")
_PROTOCOLS.add("uci-har", ProtocolSpec("uci-har", "hapt", uci_har, {"train": 7352, "test": 2947}))


def protocol_names() -> list[str]:
    return _PROTOCOLS.names()


def get_protocol(name: str, dataset: str | None = None) -> ProtocolSpec:
    """The protocol `name`; with `dataset`, also checks that it is the dataset the protocol recuts."""
    spec = _PROTOCOLS.get(name)
    if dataset is not None and spec.dataset != dataset:
        raise HarkdError(f"protocol {name!r} applies to dataset {spec.dataset!r}, not {dataset!r}")
    return spec


def protocol_counts(name: str, recordings: Sequence[Recording]) -> dict:
    """Windows per split under a protocol, beside the original release's counts."""
    spec = get_protocol(name)
    protocol = spec.build(recordings)
    windows = make_windows(protocol.recordings, protocol.windowing)
    splits = {"train": protocol.train_subjects, "test": protocol.test_subjects}
    return {split: {"windows": int(np.isin(windows.subjects, subjects).sum()), "subjects": len(subjects),
                    "original_windows": spec.original_windows[split]} for split, subjects in splits.items()}
