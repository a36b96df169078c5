"""Dataset registry: every dataset name a config or the CLI may use, with its loader and publisher facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Literal, Mapping

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
class Layout:
    """Where a publisher's folder shows: `marker`, a glob of names below that folder (e.g. 'data/a01/p1'), found in a
    tree itself or up to `max_depth` folders below it (archives often nest the publisher's folder).

    The same rule reads an unpacked tree (`locate`) and an archive's member names (`in_members`), so `harkd data
    install` refuses an archive of the wrong dataset from its listing, before unpacking anything."""

    marker: str
    max_depth: int = 2

    @property
    def _parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.marker).parts

    def locate(self, tree: Path) -> Path | None:
        """The shallowest folder holding the marker, or None."""
        for depth in range(self.max_depth + 1):
            hits = sorted(Path(tree).glob("*/" * depth + self.marker))
            if hits:
                return hits[0].parents[len(self._parts) - 1]
        return None

    def in_members(self, names: Iterable[str]) -> bool:
        """Whether archive member names ('dsads/data/a01/p1/s01.txt', ...) hold the marker where `locate` looks;
        stops at the first that does."""
        return any(self._holds(PurePosixPath(name).parts) for name in names)

    def _holds(self, parts: tuple[str, ...]) -> bool:
        marker = self._parts
        return any(len(parts) >= depth + len(marker)
                   and all(map(fnmatchcase, parts[depth:depth + len(marker)], marker))
                   for depth in range(self.max_depth + 1))


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, load and window one publisher's dataset; the loader module that registers it holds the
    publisher's layout, its citation and its quirks.

    load(root, **options) reads the installed folder `root` (the publisher's layout) into recordings.
    layout says where that layout shows inside an archive or its unpacked tree.
    archives maps known archive file names to their sha256, so `harkd data install` can verify them unasked.
    """

    name: str
    title: str
    load: Callable[..., list[Recording]]
    layout: Layout
    default_windowing: WindowConfig
    licence: str
    archives: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    # Sessions "A/B" of one recording A are consecutive pieces of one signal (DSADS's 5 s segments of a 5 min
    # recording), so a calibration session may join them and cut windows across their seams.
    contiguous_segments: bool = False

    def locate(self, tree: Path) -> Path | None:
        """The folder inside an unpacked archive that holds the publisher's layout, or None."""
        return self.layout.locate(tree)

    def load_checked(self, root: Path, options: Mapping[str, Any] | None = None) -> list[Recording]:
        options = dict(options or {})
        unknown = set(options) - set(self.options)
        if unknown:
            raise HarkdError(f"dataset {self.name}: unknown option(s) {sorted(unknown)}; "
                             f"valid options: {sorted(self.options) or 'none'}")
        return self.load(Path(root), **{**self.options, **options})


# Every module of harkd.data.loaders is imported on first lookup: a new dataset is one new loader file there that
# calls register_dataset (generic.py, the format of the user's own data, registers nothing).
_DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", "datasets", package="harkd.data.loaders", group="harkd.datasets",
    hint=" (or your own data with a dataset.yaml, see docs/generic-format.md)")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return _DATASETS.add(spec.name, spec)


def dataset_names() -> list[str]:
    return _DATASETS.names()


def get_dataset(name: str) -> DatasetSpec:
    return _DATASETS.get(name)
