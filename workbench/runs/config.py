"""Typed, validated parameters: one dataclass per notebook, extended from the method registries.

Each notebook starts with a flat ``parameters`` cell (``name = default  # help`` lines of
primitive values, which papermill overrides) and then builds its config::

    cfg = workbench.load_config("oracle-vs-random", globals())

The dataclass is the single statement of what a notebook accepts. Its fixed fields are declared in
:mod:`workbench.runs.experiment_config` (the five experiments) and :mod:`workbench.runs.evaluate_config`;
the fields of the methods are generated from the registries: every hyper-parameter of every
registered objective and localizer becomes ``<method>_<field>`` (``npo_beta``, ``memflex_mu``) and
every method the notebook trains with gets a learning rate ``lr_<method>`` (see
:func:`~workbench.runs.methods.generated_fields`). A ``plugins`` parameter names modules (or ``.py``
files) imported *before* the class is built, so a user's own objective or localizer is validated,
reachable and runnable like the built-in ones. Building a config rejects unknown keys (naming the closest allowed one),
values of the wrong type or out of range, and unknown method or data set names, each in one line
that names the key and what is allowed (:mod:`workbench.runs.params`).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from workbench.runs import evaluate_config  # noqa: F401  (registers "evaluate-checkpoints": no training fields)
from workbench.runs.experiment_config import Config  # registers the five experiment notebooks
from workbench.runs.methods import REGISTRIES, absolute_paths, generated_fields, import_plugins, method_params, plugin_modules
from workbench.runs.params import (
    CONFIGS,
    ConfigError,
    _looks_like_parameter,
    coerce,
    describe_fields,
    parameters_text,
    unknown_key_message,
)

__all__ = ["Config", "ConfigError", "absolute_paths", "config_class", "describe", "field_names", "from_params",
           "import_plugins", "load", "method_params", "parameters_cell", "plugin_modules"]


_BUILT: dict[tuple, type[Config]] = {}


def config_class(notebook: str) -> type[Config]:
    """The notebook's dataclass with the fields of the methods registered now (plug-ins included)."""
    try:
        base = CONFIGS[notebook]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(notebook, list(CONFIGS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(notebook, [f"no config for notebook {notebook!r}{hint} Known: {', '.join(sorted(CONFIGS))}"]) from None
    key = (notebook,) + tuple((k, n, id(c)) for k, reg in sorted(REGISTRIES.items()) for n, c in sorted(reg.items()))
    if key not in _BUILT:
        cls = dataclasses.make_dataclass(base.__name__, generated_fields(base), bases=(base,), frozen=True,
                                         namespace={"__module__": __name__, "__doc__": base.__doc__})
        _BUILT[key] = cls
    return _BUILT[key]


def field_names(notebook: str) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class(notebook))]


# -- building ----------------------------------------------------------------------------------------
def from_params(notebook: str, params: Mapping[str, Any]) -> Config:
    """Build and validate ``notebook``'s config from a mapping; unset keys take their defaults."""
    plugins, problem = coerce("plugins", params.get("plugins", []), list[str])
    if problem:
        raise ConfigError(notebook, [problem])
    import_plugins(plugins)
    cls = config_class(notebook)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = [unknown_key_message(k, list(fields)) for k in params if k not in fields]
    values = {}
    for key, value in params.items():
        if key in fields:
            value, problem = coerce(key, value, hints[key])
            problems += [problem] if problem else [c(key, value) for c in fields[key].metadata.get("checks", ())]
            values[key] = value
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(notebook, problems)
    cfg = cls(**values)
    if problems := cfg.cross_checks():
        raise ConfigError(notebook, problems)
    return cfg


def load(notebook: str, namespace: Mapping[str, Any], *, strict: bool = True) -> Config:
    """Build the config from a notebook's ``globals()`` after its parameters cell.

    Plug-ins named by ``plugins`` are imported first. Fields are read from ``namespace`` (absent
    ones keep their defaults). With ``strict``, any other public variable of a primitive type is
    taken for a parameter that the config does not know (a typo in an injected parameter) and
    rejected; call ``load`` right after the parameters cell.
    """
    import_plugins(list(namespace.get("plugins", []) or []))
    fields = set(field_names(notebook))
    params = {k: v for k, v in namespace.items() if k in fields}
    if strict:
        params |= {k: v for k, v in namespace.items() if k not in fields and _looks_like_parameter(k, v)}
    return from_params(notebook, params)


def describe(notebook: str) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` rows for ``python -m workbench list`` and docs."""
    return describe_fields(config_class(notebook))


def parameters_cell(notebook: str) -> str:
    """The notebook's ``parameters`` cell: one ``name = default  # help`` line per built-in parameter."""
    return parameters_text(describe(notebook))

