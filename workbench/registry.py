"""A registry of methods by name: what makes ``"npo"`` or ``"memflex"`` a valid string in parameters.

Objectives and localizers are dataclasses whose fields are their hyper-parameters; a registry maps
each one's ``name`` to its class, instantiates it with clear errors, and imports every module of a
method package so that a method added as a new file registers itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any


class Registry(dict):
    """``name -> class`` for one kind of method (``"objective"``, ``"localizer"``)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        """Class decorator: make a method available by its ``name`` (a plug-in module may call it)."""
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__qualname__} needs a `name`")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{self.kind} {cls.name!r} must be a dataclass (its fields are its hyper-parameters)")
        self[cls.name] = cls
        return cls

    def get_class(self, name: str) -> type:
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}") from None

    def make(self, name: str, **params: Any) -> Any:
        """An instance of method ``name``; unknown names and parameters get a clear error."""
        cls = self.get_class(name)
        try:
            return cls(**params)
        except TypeError as err:
            raise ValueError(f"bad parameters for {self.kind} {name!r}: {err}") from None


def import_all(package: str, path: Iterable[str]) -> None:
    """Import every module of a method package (each registers its method)."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
