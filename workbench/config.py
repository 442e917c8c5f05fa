"""Typed, validated parameters: one dataclass per notebook.

Each notebook starts with a flat ``parameters`` cell (``name = default  # help`` lines of
primitive values, which papermill overrides) and then builds one of these dataclasses::

    cfg = config.load("oracle-vs-random", globals())

The dataclass is the single statement of what a notebook accepts. Building it rejects unknown keys
(naming the closest allowed name), values of the wrong type and values out of range, and names
from the registries (objectives, localizers, data sets) that do not exist, each with a message that
names the key and what is allowed, so that a typo in a parameter file fails before hours of
training rather than being silently ignored. :func:`from_params` does the same for a plain mapping
(the CLI validates parameter files with it before running anything), and :meth:`Config.to_dict`
gives the resolved parameters back for ``params.json``.

Defaults are small CPU-sized placeholders; the parameter files in ``params/<notebook>/`` carry the
tuned values. Checks that need the model (``rmu_layer`` against the depth) live in helpers such as
:func:`resolve_rmu_layer`, called once the model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# -- names from the registries, read lazily ----------------------------------------------------
FALLBACK_NAMES: dict[str, list[str]] = {
    "objective": ["ga", "wga", "npo", "dpo", "rmu", "l2_mlp", "nll"],
    "localizer": ["random", "activations", "memflex", "wagle"],
    "dataset": ["synthetic-tofu", "synthetic-lume", "tofu", "lume"],
    "dtype": ["float32", "bfloat16", "float16"],
}
# (module, attribute) holding the live registry for each kind of name.
REGISTRY_SOURCES: dict[str, tuple[str, str]] = {
    "objective": ("workbench.objectives", "OBJECTIVES"),
    "localizer": ("workbench.localizers", "LOCALIZERS"),
    "dataset": ("workbench.data", "DATASETS"),
    "dtype": ("workbench.models", "DTYPES"),
}


def allowed_names(kind: str) -> list[str]:
    """Names registered for ``kind`` now; the fixed fallback list while the registry is absent."""
    module, attr = REGISTRY_SOURCES[kind]
    try:
        registry = getattr(__import__(module, fromlist=[attr]), attr)
    except (ImportError, AttributeError):
        return list(FALLBACK_NAMES[kind])
    return sorted(registry)


# -- errors ------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """Invalid parameters; ``problems`` lists one message per offending key."""

    def __init__(self, notebook: str, problems: list[str]):
        self.notebook = notebook
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid parameters for notebook {notebook!r}:\n{lines}")


def unknown_key_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown parameter {key!r}{hint} Allowed: {', '.join(sorted(allowed))}"


# -- per-field checks (declared in field metadata) -----------------------------------------------
Check = Callable[[str, Any], "str | None"]


def fraction(key: str, value: float) -> str | None:
    return None if 0 < value < 1 else f"{key!r} must lie in the open interval (0, 1), got {value}"


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


def one_of(kind: str) -> Check:
    def check(key: str, value: str | list[str]) -> str | None:
        allowed = allowed_names(kind)
        bad = [v for v in ([value] if isinstance(value, str) else value) if v not in allowed]
        return f"{key!r}: unknown {kind} {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}" if bad else None

    return check


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_name(key: str, value: str) -> str | None:
    ok = DEVICE_PATTERN.fullmatch(value)
    return None if ok else f"{key!r} must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N', got {value!r}"


def param(default: Any, help: str, *checks: Check) -> Any:
    """A parameter: default, one-line help (shown by ``python -m workbench list``) and its checks."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "checks": checks})
    return field(default=default, metadata={"help": help, "checks": checks})


# -- the dataclasses -------------------------------------------------------------------------------
CONFIGS: dict[str, type[Config]] = {}


def register_config(notebook: str) -> Callable[[type[Config]], type[Config]]:
    def wrap(cls: type[Config]) -> type[Config]:
        cls.notebook = notebook
        CONFIGS[notebook] = cls
        return cls

    return wrap


@dataclass(frozen=True)
class Config:
    """Parameters shared by every notebook: data, model, device, base training, evaluation, run."""

    notebook: ClassVar[str] = ""

    data: str = param("synthetic-tofu", "data set name", one_of("dataset"))
    data_dir: str = param("", "local data folder; '' -> $WORKBENCH_TOFU_DIR / $WORKBENCH_LUME_DIR")
    n_retain_authors: int = param(16, "authors (or people) kept in the retain set", positive)
    n_forget_authors: int = param(2, "authors in the forget set", positive)
    model: str = param("tiny-llama", "'tiny-llama', 'smollm2', a hub id or a local path")
    tiny_layers: int = param(4, "tiny LLaMA: decoder layers", positive)
    tiny_d_model: int = param(64, "tiny LLaMA: hidden size", positive)
    tiny_d_ff: int = param(256, "tiny LLaMA: MLP width (value vectors per layer)", positive)
    vocab_size: int = param(2048, "tiny LLaMA: BPE vocabulary size", positive)
    device: str = param("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'", device_name)
    dtype: str = param("float32", "model dtype", one_of("dtype"))
    seed: int = param(0, "seed of data sampling, model init and training order")
    pretrain_epochs: int = param(3, "tiny model: epochs of pre-training into θp", non_negative)
    pretrain_lr: float = param(1e-3, "tiny model: pre-training learning rate", positive)
    retain_epochs: int = param(5, "epochs of fine-tuning on the retain set (θr)", positive)
    retain_lr: float = param(1e-3, "learning rate of fine-tuning on the retain set", positive)
    replay_pretrain: bool = param(True, "[choice] mix θp's general-knowledge set into θr/θ_full fine-tuning (tiny models forget it otherwise, leaving MU nothing to measure)")
    batch_size: int = param(16, "batch size of every training stage", positive)
    weight_decay: float = param(0.01, "AdamW weight decay", non_negative)
    max_grad_norm: float = param(1.0, "gradient clipping norm (0 disables)", non_negative)
    unlearn_epochs: int = param(5, "epochs of unlearning", positive)
    eval_max_new_tokens: int = param(48, "greedy generation length for ROUGE-L", positive)
    eval_generate: bool = param(True, "generate answers (ROUGE-L); False skips generation")
    n_alpha: int = param(21, "mixing coefficients α = 0 … 1 (at least 2)", at_least_two)
    n_rounds: int = param(10000, "permutation / bootstrap rounds of the significance tests", positive)
    trust_remote_code: bool = param(False, "allow hub models with custom code")
    run_id: str = param("", "run folder name under outputs/<notebook>/; '' -> automatic")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def lr_for(self, name: str) -> float:
        """Learning rate of an objective or localizer, read from its ``lr_<name>`` parameter."""
        return getattr(self, f"lr_{name}")

    def data_path(self) -> str:
        """``data_dir``, or the data set's environment variable when it is empty (read now, not at import)."""
        env = DATA_DIR_ENV.get(self.data)
        return self.data_dir or (os.environ.get(env, "") if env else "")

    def cross_checks(self) -> list[str]:
        """Checks that involve several fields; subclasses extend the list."""
        return []


DATA_DIR_ENV = {"tofu": "WORKBENCH_TOFU_DIR", "lume": "WORKBENCH_LUME_DIR"}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class InjectionConfig(Config):
    """The controlled setting of §4: knowledge injected into a target region of θr gives θo."""

    region_fraction: float = param(0.1, "p: share of all value vectors in a region", fraction)
    inject_lr: float = param(3e-3, "learning rate of forget injection (θr -> θo)", positive)
    inject_epochs: int = param(10, "epochs of forget injection", positive)
    lambda_retain: float = param(2.0, "weight of NLL(retain) during injection", non_negative)
    min_forget_es: float = param(0.8, "injection must reach this mean forget ES", unit_interval)
    max_retain_es_drop: float = param(0.05, "injection may lower retain ES by at most this", unit_interval)
    check_fs: bool = param(True, "check that FS at α=1 approaches but does not reach 1")

    def cross_checks(self) -> list[str]:
        # V_rdm is drawn outside V_tgt, so two disjoint regions of p each must fit.
        problems = super().cross_checks()
        if 2 * self.region_fraction > 1:
            problems.append(f"'region_fraction' = {self.region_fraction}: disjoint Oracle and Random regions need 2p <= 1")
        return problems


def objectives_have_rates(cfg: Config, names: list[str], key: str) -> list[str]:
    """Every listed objective/localizer needs its own ``lr_<name>`` parameter in this notebook."""
    allowed = {f.name for f in dataclasses.fields(cfg)}
    missing = [n for n in names if f"lr_{n}" not in allowed]
    wanted = ", ".join(f"lr_{n}" for n in missing)
    return [f"{key!r}: notebook {cfg.notebook!r} has no learning-rate parameter {wanted} for {', '.join(map(repr, missing))}"] if missing else []


@dataclass(frozen=True)
class ObjectiveParams(Config):
    """Hyperparameters of the forget objectives (SPEC §3); rmu_layer is checked against the model later."""

    wga_alpha: float = param(0.1, "WGA confidence exponent α", non_negative)
    npo_beta: float = param(0.5, "NPO inverse temperature β", positive)
    dpo_beta: float = param(0.5, "DPO inverse temperature β", positive)
    rmu_layer: int = param(-1, "RMU steering layer; -1 -> floor(2L/3)")
    rmu_c: float = param(2.0, "RMU steering scale c", positive)

    def cross_checks(self) -> list[str]:
        # The tiny model's depth is known before anything is built; other models are checked on load.
        problems = super().cross_checks()
        if self.model == "tiny-llama" and self.rmu_layer != -1 and not 0 <= self.rmu_layer < self.tiny_layers:
            problems.append(f"'rmu_layer' = {self.rmu_layer} is outside the tiny model's {self.tiny_layers} layers "
                            f"(0..{self.tiny_layers - 1}, or -1 for floor(2L/3))")
        return problems


@register_config("oracle-vs-random")
@dataclass(frozen=True)
class OracleVsRandomConfig(InjectionConfig, ObjectiveParams):
    region_seeds: list[int] = param([7, 19, 31, 47, 99], "seeds of the target region V_tgt", non_empty)
    objectives: list[str] = param(["wga", "npo", "dpo", "rmu"], "unlearning objectives", non_empty, one_of("objective"))
    lr_wga: float = param(1e-3, "unlearning learning rate of WGA", positive)
    lr_npo: float = param(1e-3, "unlearning learning rate of NPO", positive)
    lr_dpo: float = param(3e-3, "unlearning learning rate of DPO", positive)
    lr_rmu: float = param(1e-3, "unlearning learning rate of RMU", positive)
    localizers: list[str] = param(["activations", "memflex", "wagle"], "localizers scored on θo against V_tgt", one_of("localizer"))

    def cross_checks(self) -> list[str]:
        return super().cross_checks() + objectives_have_rates(self, self.objectives, "objectives")


@register_config("l2-mlp-supervision")
@dataclass(frozen=True)
class L2MlpConfig(InjectionConfig):
    oracle_seed: int = param(7, "seed of the Oracle region V_tgt")
    random_seeds: list[int] = param([7, 11, 49], "seeds of the Random regions (A, B, C)", non_empty)
    lr_l2: float = param(3e-3, "unlearning learning rate of the L2 MLP loss", positive)
    retain_l2_weight: float = param(2.0, "weight of the same L2 term on retain inputs (paper's α = 2)", non_negative)


@register_config("lume")
@dataclass(frozen=True)
class LumeConfig(InjectionConfig):
    data: str = param("synthetic-lume", "data set name", one_of("dataset"))
    n_people: int = param(60, "people sampled from LUME Task 2 (or generated)", positive)
    forget_ratio: float = param(0.1, "share of people in the forget set", fraction)
    region_seeds: list[int] = param([7, 19, 31], "seeds of the target region V_tgt", non_empty)
    objectives: list[str] = param(["npo"], "unlearning objectives", non_empty, one_of("objective"))
    lr_npo: float = param(1e-3, "unlearning learning rate of NPO", positive)
    npo_beta: float = param(0.5, "NPO inverse temperature β", positive)

    def cross_checks(self) -> list[str]:
        return super().cross_checks() + objectives_have_rates(self, self.objectives, "objectives")


@register_config("revisit-localizers")
@dataclass(frozen=True)
class RevisitLocalizersConfig(ObjectiveParams):
    region_fraction: float = param(0.1, "share of value vectors each localizer selects", fraction)
    localizers: list[str] = param(["activations", "memflex", "wagle"], "localizers compared with Random", non_empty, one_of("localizer"))
    random_seeds: list[int] = param([0, 1, 2], "seeds of the Random regions", non_empty)
    objective: str = param("npo", "unlearning objective", one_of("objective"))
    full_lr: float = param(1e-3, "learning rate of fine-tuning θp on the full set (target model)", positive)
    full_epochs: int = param(5, "epochs of fine-tuning on the full set", positive)
    lr_random: float = param(1e-3, "unlearning learning rate in Random regions", positive)
    lr_activations: float = param(1e-3, "unlearning learning rate in Activations regions", positive)
    lr_memflex: float = param(1e-3, "unlearning learning rate in MemFlex regions", positive)
    lr_wagle: float = param(1e-3, "unlearning learning rate in WAGLE regions", positive)
    weight_level: bool = param(False, "also run weight-level WAGLE vs random weights (Table 5)")
    weight_fraction: float = param(0.8, "share of down-projection weights in weight-level regions", fraction)
    lr_weight_level: float = param(1e-3, "unlearning learning rate of the weight-level variant", positive)
    check_fs: bool = param(True, "check that FS at α=1 approaches but does not reach 1")

    def cross_checks(self) -> list[str]:
        return super().cross_checks() + objectives_have_rates(self, self.localizers, "localizers")


# -- building ----------------------------------------------------------------------------------------
def config_class(notebook: str) -> type[Config]:
    try:
        return CONFIGS[notebook]
    except KeyError:
        close = difflib.get_close_matches(notebook, list(CONFIGS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(notebook, [f"no config for notebook {notebook!r}{hint} Known: {', '.join(sorted(CONFIGS))}"]) from None


def field_names(notebook: str) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class(notebook))]


def from_params(notebook: str, params: Mapping[str, Any]) -> Config:
    """Build and validate ``notebook``'s config from a mapping; unset keys take their defaults."""
    cls = config_class(notebook)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    problems = [unknown_key_message(k, list(fields)) for k in params if k not in fields]
    values = {}
    for key, value in params.items():
        if key in fields:
            value, problem = coerce(key, value, hints[key])
            problems += [problem] if problem else [c(key, value) for c in fields[key].metadata["checks"]]
            values[key] = value
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError(notebook, problems)
    cfg = cls(**values)
    if problems := cfg.cross_checks():
        raise ConfigError(notebook, problems)
    return cfg


# Names IPython puts into a notebook's globals that are not parameters.
IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def load(notebook: str, namespace: Mapping[str, Any], *, strict: bool = True) -> Config:
    """Build the config from a notebook's ``globals()`` after its parameters cell.

    Fields are read from ``namespace`` (absent ones keep their defaults). With ``strict``, any other
    public variable of a primitive type is taken for a parameter that the config does not know (a
    typo in an injected parameter) and rejected; call ``load`` right after the parameters cell.
    """
    fields = set(field_names(notebook))
    params = {k: v for k, v in namespace.items() if k in fields}
    if strict:
        params |= {k: v for k, v in namespace.items() if k not in fields and _looks_like_parameter(k, v)}
    return from_params(notebook, params)


def _looks_like_parameter(name: str, value: Any) -> bool:
    if name.startswith("_") or name in IPYTHON_NAMES:
        return False
    primitive = (bool, int, float, str, type(None))
    return isinstance(value, primitive) or (isinstance(value, list) and all(isinstance(v, primitive) for v in value))


# -- types -------------------------------------------------------------------------------------------
def coerce(key: str, value: Any, hint: Any) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` fits ``hint`` (ints widen to float); else ``(value, message)``."""
    origin = typing.get_origin(hint)
    if origin is list:
        return _coerce_list(key, value, typing.get_args(hint)[0])
    converted = SCALARS[hint](value)
    if converted is _WRONG:
        return value, f"{key!r}: expected {hint.__name__}, got {type(value).__name__} ({value!r})"
    return converted, None


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


# -- checks that need the model ---------------------------------------------------------------------
def resolve_rmu_layer(layer: int, n_layers: int) -> int:
    """``-1`` → ⌊2L/3⌋ (paper: 21 of 32) **[choice]**; any other layer must exist in the model."""
    resolved = (2 * n_layers) // 3 if layer == -1 else layer
    if not 0 <= resolved < n_layers:
        raise ConfigError("", [f"'rmu_layer' = {layer} is outside the model's {n_layers} layers (0..{n_layers - 1}, or -1)"])
    return resolved


def describe(notebook: str) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, help)`` rows for ``python -m workbench list`` and docs."""
    cls = config_class(notebook)
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), default, f.metadata["help"]))
    return rows
