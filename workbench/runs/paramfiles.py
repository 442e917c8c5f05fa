"""Parameter files and ``key=value`` overrides, as the CLI and grids read them.

YAML files are read with PyYAML's safe loader, taught that ``1e-3`` is a float (YAML 1.1 reads it
as a string, and learning rates are written that way); a syntax error names the file, line and
column. Files and overrides merge left to right, later values winning.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from workbench.runs import rundir as runs


class _Loader(yaml.SafeLoader):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1); learning rates are written that way, so fix it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    value = yaml.load(text, Loader=_Loader)  # noqa: S506 — SafeLoader subclass
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value read as a YAML scalar or flow list (``objectives=[npo,wga]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected key=value or a .yaml file, got {item!r}")
    return key.strip(), load_yaml(raw)


def find_file(path: str | os.PathLike, *bases: Path) -> Path:
    """``path`` as given, else relative to each of ``bases``, else relative to the repository."""
    candidates = [Path(path)] + [b / path for b in bases] + [runs.repo_root() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path} not found (looked in {', '.join(str(c.parent) for c in candidates)})")


def merge_params(items: Sequence[str], *bases: Path) -> dict[str, Any]:
    """Merge parameter files and ``key=value`` overrides left to right (later wins)."""
    merged: dict[str, Any] = {}
    for item in items:
        if "=" in item and not item.endswith((".yaml", ".yml")):
            key, value = parse_override(item)
            merged[key] = value
        else:
            merged |= load_param_file(find_file(item, *bases))
    return merged


def load_param_file(path: Path) -> dict[str, Any]:
    """A YAML parameter file as a mapping; a syntax error names the file, line and column."""
    try:
        value = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: a parameter file holds `name: value` lines, got a {type(value).__name__}")
    return value


