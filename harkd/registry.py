"""Name registries (datasets, models, KD strategies): every name a config may use is resolvable and listable."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from harkd.errors import HarkdError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names registered by modules at import; the modules are imported on first lookup to keep `import harkd` light.

    `modules` lists them, or `package` names a package whose every module is imported (so a new strategy or model
    is one new file, with no list to edit). An unknown name is a HarkdError listing the known ones, e.g.
    "unknown model 'x'; known models: a, b".
    """

    def __init__(self, kind: str, plural: str, modules: tuple[str, ...] = (), hint: str = "", package: str = ""):
        self.kind, self.plural, self.hint = kind, plural, hint
        self.modules, self.package = modules, package
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def _load(self) -> None:
        for module in self.modules:
            importlib.import_module(module)
        if self.package:
            for info in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise HarkdError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}"
                             f"{self.hint}") from None
