"""Name registries (datasets, models, KD strategies): every name a config may use is resolvable and listable.

A user's own installed package adds entries without forking harkd: it declares a Python entry point in the
registry's group (`harkd.models`, `harkd.strategies`, `harkd.datasets`) naming a module, and that module registers
its entries with the same decorators harkd's own modules use. Configs name entries, never import paths.
"""

from __future__ import annotations

import importlib
import importlib.metadata
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

    def __init__(self, kind: str, plural: str, modules: tuple[str, ...] = (), hint: str = "", package: str = "",
                 group: str = ""):
        self.kind, self.plural, self.hint = kind, plural, hint
        self.modules, self.package, self.group = modules, package, group
        self._entries: dict[str, T] = {}
        self._plugins_loaded = False

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
        if self.group and not self._plugins_loaded:
            self._plugins_loaded = True  # once: a plugin that fails is reported, not retried on every lookup
            for point in importlib.metadata.entry_points(group=self.group):
                _load_plugin(point, self.group)

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


def _load_plugin(point: importlib.metadata.EntryPoint, group: str) -> None:
    """Import one plugin module (its registrations run); a failure is one line naming the distribution."""
    where = f"plugin {point.dist.name if point.dist else point.value!r} (entry point {group}: {point.name} = " \
            f"{point.value})"
    try:
        point.load()
    except Exception as exc:  # anything a third party's import raises: the user needs to know which plugin
        raise HarkdError(f"{where}: {type(exc).__name__}: {exc}") from None
