"""Dataset registry: every dataset name a config or the CLI may use, with its loader and publisher facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from harkd.data.recording import Recording
from harkd.errors import HarkdError
from harkd.registry import Registry
from harkd.schema import Bool, PositiveInt, config_dataclass


@config_dataclass("windowing")
class WindowConfig:
    """Sliding windows in samples at the recording's rate; label_rule is 'majority' or 'centre'."""

    length: PositiveInt
    stride: PositiveInt
    label_rule: Literal["majority", "centre"] = "majority"
    drop_null: Bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, load and window one publisher's dataset.

    load(root, **options) reads the installed folder `root` (the publisher's layout) into recordings.
    locate(tree) returns the folder inside an unpacked archive that holds the publisher's layout, or None.
    archives maps known archive file names to their sha256, so `harkd data install` can verify them unasked.
    """

    name: str
    title: str
    load: Callable[..., list[Recording]]
    locate: Callable[[Path], Path | None]
    default_windowing: WindowConfig
    licence: str
    citation: str
    archives: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def load_checked(self, root: Path, options: Mapping[str, Any] | None = None) -> list[Recording]:
        options = dict(options or {})
        unknown = set(options) - set(self.options)
        if unknown:
            raise HarkdError(f"dataset {self.name}: unknown option(s) {sorted(unknown)}; "
                             f"valid options: {sorted(self.options) or 'none'}")
        return self.load(Path(root), **{**self.options, **options})


def find_layout(tree: Path, marker: str, levels_up: int, max_depth: int = 2) -> Path | None:
    """The shallowest folder holding `marker` (a glob, e.g. 'data/a01/p1'), searching `tree` and up to `max_depth`
    levels below it (archives often nest the publisher's folder); `levels_up` climbs from the match to that folder."""
    for depth in range(max_depth + 1):
        hits = sorted(Path(tree).glob("*/" * depth + marker))
        if hits:
            return hits[0].parents[levels_up - 1] if levels_up else hits[0]
    return None


_DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", "datasets", ("harkd.data.loaders.dsads", "harkd.data.loaders.hapt", "harkd.data.loaders.openpack"),
    hint=" (or your own data with a dataset.yaml, see docs/generic-format.md)")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return _DATASETS.add(spec.name, spec)


def dataset_names() -> list[str]:
    return _DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    return _DATASETS.get(name)
