"""What the notebook configs learn from the method registries, and the plug-ins that extend them.

Every hyper-parameter of every registered objective and localizer becomes a notebook parameter
``<method>_<field>`` (a field named ``seed`` takes the run's seed instead), every method a notebook
trains with gets a learning rate ``lr_<method>`` with the class's ``default_lr``, and the paper's
default lists come from the classes' ``paper`` tags. ``plugins`` (module names or ``.py`` files) are
imported before a config is built, so a user's own method is validated and reachable like a
built-in one. Relative paths in parameters are resolved against the caller's working directory.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from workbench import localizers as loc
from workbench import objectives as obj
from workbench.data import DATASETS
from workbench.models import DTYPES
from workbench.runs.params import ConfigError, param, positive

REGISTRIES: dict[str, dict[str, type]] = {"objective": obj.OBJECTIVES, "localizer": loc.LOCALIZERS}


def forget_objectives() -> list[str]:
    return sorted(n for n, c in obj.OBJECTIVES.items() if c.forget)


def vector_localizers() -> list[str]:
    return sorted(n for n, c in loc.LOCALIZERS.items() if c.level == "vector")


def weight_localizers() -> list[str]:
    return sorted(n for n, c in loc.LOCALIZERS.items() if c.level == "weight")


def used_in(kind: str, experiment: str) -> list[str]:
    """Registered methods that the paper uses in ``experiment`` (their ``paper`` tags): default lists."""
    return sorted(n for n, c in REGISTRIES[kind].items() if experiment in c.paper)


def _names(kind: str) -> Callable[[], list[str]]:
    return {"objective": forget_objectives, "localizer": vector_localizers, "weight localizer": weight_localizers,
            "dataset": lambda: sorted(DATASETS), "dtype": lambda: sorted(DTYPES)}[kind]


def method_fields(kind: str, name: str) -> list[dataclasses.Field]:
    """A method's hyper-parameters: its dataclass fields except ``seed`` (which takes the run's seed)."""
    return [f for f in dataclasses.fields(REGISTRIES[kind][name]) if f.name != "seed"]


def method_params(cfg: Any, kind: str, name: str) -> dict[str, Any]:
    """The keyword arguments of method ``name`` as ``cfg`` gives them (``<name>_<field>``, run seed)."""
    cls = REGISTRIES[kind][name]
    params = {f.name: getattr(cfg, f"{name}_{f.name}") for f in method_fields(kind, name)}
    if "seed" in {f.name for f in dataclasses.fields(cls)}:
        params["seed"] = cfg.seed
    return params


def _lr_names(kind: str) -> list[str]:
    return forget_objectives() if kind == "objective" else vector_localizers()


def generated_fields(base: type) -> list[tuple[str, Any, dataclasses.Field]]:
    out, taken = [], {f.name for f in dataclasses.fields(base)}
    for kind in base.method_kinds:
        for name in sorted(REGISTRIES[kind]):
            hints = typing.get_type_hints(REGISTRIES[kind][name])
            for f in method_fields(kind, name):
                key = f"{name}_{f.name}"
                help_ = f.metadata.get("help", f"{kind} {name!r}: {f.name}")
                out.append((key, hints[f.name], param(f.default, help_)))
    for kind in base.lr_kinds:
        for name in _lr_names(kind):
            what = "with" if kind == "objective" else "in the regions of"
            out.append((f"lr_{name}", float, param(REGISTRIES[kind][name].default_lr,
                                                     f"unlearning learning rate {what} {name}", positive)))
    return [g for g in out if g[0] not in taken]


# -- plug-ins ------------------------------------------------------------------------------------------
def import_plugins(plugins: list[str] | tuple[str, ...]) -> None:
    """Import each plug-in: a module name (``my_pkg.my_objective``) or a ``.py`` file path (absolute, or
    relative to the working directory). Its ``register`` calls add methods to the registries."""
    problems = []
    for entry in plugins:
        try:
            _import_one(entry)
        except Exception as err:  # a plug-in's own error, reported with its name
            problems.append(f"'plugins': cannot import {entry!r}: {type(err).__name__}: {err}")
    if problems:
        raise ConfigError("", problems)


def _import_one(entry: str) -> None:
    if not _is_file_entry(entry):
        importlib.import_module(entry)
        return
    path = Path(entry).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    name = f"workbench_plugin_{path.stem}"
    if getattr(sys.modules.get(name), "__file__", None) == str(path):
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def plugin_modules(plugins: list[str]) -> list[str]:
    """Module names of imported plug-ins (their source is part of cache keys)."""
    return [f"workbench_plugin_{Path(e).stem}" if _is_file_entry(e) else e for e in plugins]


PATH_PARAMS = ("data_dir",)  # and the file entries of ``plugins``
MODEL_PARAMS = ("model", "retain_model", "full_model", "before", "after")  # a hub id, or a folder when one exists there


def absolute_paths(params: Mapping[str, Any], base: str | os.PathLike | None = None) -> dict[str, Any]:
    """``params`` with relative folder and plug-in file paths made absolute against ``base`` (the
    working directory): papermill runs the notebook in its own folder, where they would not resolve."""
    base = Path(base or os.getcwd())
    out = dict(params)
    for key in PATH_PARAMS:
        if isinstance(out.get(key), str) and out[key] and not Path(out[key]).expanduser().is_absolute():
            out[key] = str((base / out[key]).resolve())
    for key in MODEL_PARAMS:  # "org/name" is a hub id unless such a folder exists here
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [_local(v, base) for v in value]
        elif isinstance(value, str):
            out[key] = _local(value, base)
    if isinstance(out.get("plugins"), list):
        out["plugins"] = [str((base / e).resolve()) if isinstance(e, str) and _is_file_entry(e) and not Path(e).is_absolute()
                          else e for e in out["plugins"]]
    return out


def _local(value, base: Path):
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute() and (base / value).is_dir():
        return str((base / value).resolve())
    return value


def _is_file_entry(entry: str) -> bool:
    return entry.endswith(".py") or os.sep in entry


