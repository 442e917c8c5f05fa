"""The validation framework behind notebook configs: parameters, their checks, types and errors.

A parameter is a dataclass field with a default, one line of help and its checks
(:func:`param`). Values from a notebook's globals, a YAML file or the command line are coerced to
the field's type (ints widen to float; ``True`` is never an int; ``None`` only where the type
allows it) and checked; every problem becomes one line of a :class:`ConfigError` that names the key
and what is allowed, so that a typo fails before hours of training rather than being ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Invalid parameters; ``problems`` lists one message per offending key."""

    def __init__(self, notebook: str, problems: list[str]):
        self.notebook = notebook
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        where = f" for notebook {notebook!r}" if notebook else ""
        super().__init__(f"invalid parameters{where}:\n{lines}")


def unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown parameter {key!r}{hint} Allowed: {', '.join(sorted(allowed))}"


# -- per-field checks (declared in field metadata) -----------------------------------------------
Check = Callable[[str, Any], "str | None"]


def fraction(key: str, value: float) -> str | None:
    return None if 0 < value < 1 else f"{key!r} must lie in the open interval (0, 1), got {value}"


def each(check: Check) -> Check:
    """``check`` applied to every element of a list parameter; the first failure is the message."""

    def run(key: str, values: list) -> str | None:
        return next((problem for v in values if (problem := check(key, v))), None)

    return run


def unit_interval(key: str, value: float) -> str | None:
    return None if 0 <= value <= 1 else f"{key!r} must lie in [0, 1], got {value}"


def positive(key: str, value: float) -> str | None:
    return None if value > 0 else f"{key!r} must be positive, got {value}"


def non_negative(key: str, value: float) -> str | None:
    return None if value >= 0 else f"{key!r} must be >= 0, got {value}"


def at_least_two(key: str, value: int) -> str | None:
    return None if value >= 2 else f"{key!r} must be >= 2, got {value}"


def non_empty(key: str, value: list) -> str | None:
    return None if len(value) > 0 else f"{key!r} must not be empty"


def one_of(kind: str, names: Callable[[], list[str]]) -> Check:
    """``value`` (or every item of a list) must be one of ``names()``, read when checked."""

    def check(key: str, value: str | list[str]) -> str | None:
        allowed = names()
        bad = [v for v in ([value] if isinstance(value, str) else value) if v not in allowed]
        return f"{key!r}: unknown {kind} {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}" if bad else None

    return check


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


DEVICE_MAPS = re.compile(r"balanced|balanced_low_0|sequential|.*device_map.*|.*,.*")


def device_name(key: str, value: str) -> str | None:
    """One device; a device map (a model over several devices) is refused with what to do instead."""
    if DEVICE_MAPS.fullmatch(value.strip()):
        return (f"{key!r} = {value!r}: a model over several devices is not supported (mixing, region deltas and "
                "generation run on one device). Name one device; train θr / θ_full over several GPUs with "
                "scripts/train_distributed.sh full and pass retain_model= / full_model=")
    ok = DEVICE_PATTERN.fullmatch(value)
    return None if ok else f"{key!r} must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (one device), got {value!r}"


# Every notebook's config class by notebook name (``runs.config`` and ``runs.evaluate_config`` fill it).
CONFIGS: dict[str, type] = {}


def register_config(notebook: str) -> Callable[[type], type]:
    """Class decorator: the config of ``notebook``, found by :func:`workbench.runs.config.config_class`."""

    def wrap(cls: type) -> type:
        cls.notebook = notebook
        CONFIGS[notebook] = cls
        return cls

    return wrap


def param(default: Any, help: str, *checks: Check) -> Any:
    """A parameter: default, one-line help (shown by ``python -m workbench list``) and its checks."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "checks": checks})
    return field(default=default, metadata={"help": help, "checks": checks})


# -- types -------------------------------------------------------------------------------------------
def coerce(key: str, value: Any, hint: Any) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint`` (ints widen to float); else ``(value, message)``."""
    inner = optional_inner(hint)
    if inner is not None:
        return (None, None) if value is None else coerce(key, value, inner)
    if typing.get_origin(hint) is list:
        return _coerce_list(key, value, typing.get_args(hint)[0])
    converted = SCALARS[hint](value)
    if converted is _WRONG:
        return value, f"{key!r}: expected {hint.__name__}, got {type(value).__name__} ({value!r})"
    return converted, None


def optional_inner(hint: Any) -> Any:
    """``X`` for ``X | None``, else ``None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0]
    return None


def type_name(hint: Any) -> str:
    inner = optional_inner(hint)
    if inner is not None:
        return f"{type_name(inner)} | None"
    return getattr(hint, "__name__", str(hint)) if typing.get_origin(hint) is not list else str(hint)


def _coerce_list(key: str, value: Any, item: type) -> tuple[Any, str | None]:
    if not isinstance(value, (list, tuple)):
        return value, f"{key!r}: expected list[{item.__name__}], got {type(value).__name__} ({value!r})"
    items = [SCALARS[item](v) for v in value]
    if any(v is _WRONG for v in items):
        return value, f"{key!r}: expected list[{item.__name__}], got {value!r}"
    return items, None


_WRONG = object()


def _int(v: Any) -> Any:
    # bool is a subclass of int; `seed = True` is a mistake, not 1.
    return v if isinstance(v, int) and not isinstance(v, bool) else _WRONG


def _float(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _WRONG


SCALARS: dict[type, Callable[[Any], Any]] = {
    int: _int,
    float: _float,
    bool: lambda v: v if isinstance(v, bool) else _WRONG,
    str: lambda v: v if isinstance(v, str) else _WRONG,
}


# -- model names, and what a notebook's globals hold besides parameters --------------------------------
BUILT_IN_MODELS = ("tiny-llama", "smollm2")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def model_problems(key: str, value: str) -> list[str]:
    """A model is built in, a local folder that exists, or has the form of a hub id (``org/name``)."""
    if value in BUILT_IN_MODELS or Path(value).expanduser().is_dir():
        return []
    if HUB_ID.fullmatch(value) and not value.startswith("."):
        return []
    return [f"{key!r} = {value!r}: no such folder, and not a hub id (org/name); built in: {', '.join(BUILT_IN_MODELS)}"]


IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def _looks_like_parameter(name: str, value: Any) -> bool:
    if name.startswith("_") or name in IPYTHON_NAMES:
        return False
    primitive = (bool, int, float, str, type(None))
    return isinstance(value, primitive) or (isinstance(value, list) and all(isinstance(v, primitive) for v in value))


def describe_fields(cls) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` of every field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((f.name, type_name(hints[f.name]), default, f.metadata["help"]))
    return rows


def parameters_text(rows: list[tuple[str, str, Any, str]]) -> str:
    """A ``parameters`` cell: one ``name = default  # help`` line per row (papermill cannot parse a
    comment that holds ``=``, so the help says "is" instead)."""
    return "\n".join(f"{name} = {default!r}  # {help_.replace('=', 'is').replace('  ', ' ')}" for name, _, default, help_ in rows)
