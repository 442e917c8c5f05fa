"""Parameter validation: every message names the key and what is allowed."""

from __future__ import annotations

import math
import types

import pytest

from workbench import config

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fixed_names(monkeypatch):
    """Registries under construction elsewhere: validate against the fixed fallback lists."""
    monkeypatch.setattr(config, "REGISTRY_SOURCES", {k: ("workbench._absent_registry", "X") for k in config.REGISTRY_SOURCES})


def problems(notebook, **params) -> str:
    with pytest.raises(config.ConfigError) as err:
        config.from_params(notebook, params)
    return str(err.value)


@pytest.mark.parametrize("notebook", sorted(config.CONFIGS))
def test_defaults_build_and_round_trip(notebook):
    cfg = config.from_params(notebook, {})
    assert cfg.notebook == notebook
    assert config.from_params(notebook, cfg.to_dict()) == cfg


def test_brief_parameter_names_exist():
    assert {"region_fraction", "region_seeds", "objectives", "lr_rmu", "rmu_layer", "localizers", "check_fs",
            "n_alpha", "run_id", "trust_remote_code"} <= set(config.field_names("oracle-vs-random"))
    assert {"oracle_seed", "random_seeds", "lr_l2", "retain_l2_weight"} <= set(config.field_names("l2-mlp-supervision"))
    assert {"n_people", "forget_ratio", "lr_npo"} <= set(config.field_names("lume"))
    assert {"full_lr", "lr_wagle", "weight_level", "weight_fraction", "lr_weight_level"} <= set(config.field_names("revisit-localizers"))
    assert config.from_params("lume", {}).data == "synthetic-lume"


def test_unknown_key_names_key_closest_and_allowed():
    msg = problems("oracle-vs-random", sede=1)
    assert "'sede'" in msg and "did you mean 'seed'" in msg and "region_seeds" in msg and "lr_wga" in msg


@pytest.mark.parametrize("key, value, expected", [
    ("n_alpha", "21", "'n_alpha': expected int, got str"),
    ("seed", True, "'seed': expected int, got bool"),
    ("eval_generate", 1, "'eval_generate': expected bool, got int"),
    ("region_seeds", [7, "x"], "'region_seeds': expected list[int]"),
    ("objectives", "npo", "'objectives': expected list[str], got str"),
])
def test_wrong_type(key, value, expected):
    assert expected in problems("oracle-vs-random", **{key: value})


def test_ints_widen_to_float():
    cfg = config.from_params("oracle-vs-random", {"lr_npo": 1, "region_fraction": 0.2})
    assert isinstance(cfg.lr_npo, float) and cfg.lr_for("npo") == 1.0


def test_unknown_registry_names():
    assert "'objectives': unknown objective 'nop'; allowed: ga, wga, npo" in problems("oracle-vs-random", objectives=["nop"])
    assert "unknown localizer 'wagel'" in problems("revisit-localizers", localizers=["wagel"])
    assert "unknown dataset 'tofu2'" in problems("lume", data="tofu2")
    assert "'objective': unknown objective" in problems("revisit-localizers", objective="xx")


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_fraction_outside_open_interval(value):
    assert "'region_fraction' must lie in the open interval (0, 1)" in problems("oracle-vs-random", region_fraction=value)
    assert "'forget_ratio' must lie in the open interval (0, 1)" in problems("lume", forget_ratio=value)


@pytest.mark.parametrize("notebook", ["oracle-vs-random", "l2-mlp-supervision", "lume"])
def test_disjoint_regions_need_2p_at_most_1(notebook):
    assert "2p <= 1" in problems(notebook, region_fraction=0.6)
    config.from_params(notebook, {"region_fraction": 0.5})


def test_revisit_regions_need_not_be_disjoint():
    assert config.from_params("revisit-localizers", {"region_fraction": 0.6}).region_fraction == 0.6


def test_objective_without_learning_rate():
    assert "lr_wga" in problems("lume", objectives=["wga"])
    assert "lr_random" not in problems("revisit-localizers", localizers=["random", "nope"])


def test_all_problems_reported_together():
    err = pytest.raises(config.ConfigError, config.from_params, "oracle-vs-random", {"sede": 1, "n_alpha": 1, "device": "gpu"})
    assert len(err.value.problems) == 3


def test_registry_is_read_lazily(monkeypatch):
    registry = types.ModuleType("fake_registry")
    registry.OBJECTIVES = {"npo": None, "new_objective": None}
    monkeypatch.setitem(__import__("sys").modules, "fake_registry", registry)
    monkeypatch.setitem(config.REGISTRY_SOURCES, "objective", ("fake_registry", "OBJECTIVES"))
    assert config.allowed_names("objective") == ["new_objective", "npo"]
    assert "unknown objective 'wga'" in problems("lume", objectives=["wga"])


def test_load_from_notebook_globals():
    namespace = {"seed": 3, "objectives": ["npo"], "math": math, "In": ["x"], "_i1": "x", "config": config}
    cfg = config.load("oracle-vs-random", namespace)
    assert cfg.seed == 3 and cfg.objectives == ["npo"] and cfg.region_fraction == 0.1
    namespace["sede"] = 4  # a typo injected by papermill
    with pytest.raises(config.ConfigError, match="'sede'; did you mean 'seed'"):
        config.load("oracle-vs-random", namespace)
    assert config.load("oracle-vs-random", namespace, strict=False).seed == 3


def test_unknown_notebook():
    with pytest.raises(config.ConfigError, match="did you mean 'lume'"):
        config.from_params("lumee", {})


def test_rmu_layer_resolved_with_model_depth():
    assert config.resolve_rmu_layer(-1, 32) == 21
    assert config.resolve_rmu_layer(-1, 4) == 2
    with pytest.raises(config.ConfigError, match="'rmu_layer' = 4 is outside the model's 4 layers"):
        config.resolve_rmu_layer(4, 4)


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_TOFU_DIR", "/data/tofu")
    assert config.from_params("oracle-vs-random", {"data": "tofu"}).data_path() == "/data/tofu"
    assert config.from_params("oracle-vs-random", {"data": "tofu", "data_dir": "/x"}).data_path() == "/x"
    assert config.from_params("oracle-vs-random", {}).data_path() == ""


def test_describe_lists_help():
    rows = {name: (typ, default, text) for name, typ, default, text in config.describe("lume")}
    assert rows["forget_ratio"][1] == 0.1 and "people" in rows["forget_ratio"][2]
