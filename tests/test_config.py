"""Parameter validation: every message names the key and what is allowed."""

from __future__ import annotations

import math

import pytest

from workbench.runs import config

pytestmark = pytest.mark.unit


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
    assert {"oracle_seeds", "random_seeds", "lr_l2_mlp", "retain_l2_weight"} <= set(config.field_names("l2-mlp-supervision"))
    assert {"n_people", "forget_ratio", "lr_npo"} <= set(config.field_names("lume"))
    revisit = set(config.field_names("revisit-localizers"))
    assert {"full_lr", "lr_wagle", "weight_level", "weight_fraction", "lr_weight_level"} <= revisit
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
    assert "'objectives': unknown objective 'nop'; allowed: dpo, ga, l2_mlp, npo, rmu, wga" in problems(
        "oracle-vs-random", objectives=["nop"])
    assert "unknown objective 'nll'" in problems("lume", objectives=["nll"])  # a learning loss, not for unlearning
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


def test_every_method_gets_its_learning_rate_and_hyper_parameters():
    names = set(config.field_names("oracle-vs-random"))
    assert {"lr_ga", "lr_wga", "lr_npo", "lr_dpo", "lr_rmu", "lr_l2_mlp"} <= names and "lr_nll" not in names
    assert {"npo_beta", "dpo_beta", "wga_alpha", "rmu_layer", "rmu_c", "rmu_tokens", "memflex_mu", "memflex_repeats",
            "wagle_absolute", "wagle_gamma", "activations_reduce"} <= names
    assert not any(n.endswith("_seed") and n != "random_per_seed" for n in names)  # a method's seed is the run's seed
    assert {"lr_random", "lr_activations", "lr_memflex", "lr_wagle", "memflex_mu"} <= set(
        config.field_names("revisit-localizers"))
    assert "lr_wagle_weights" not in config.field_names("revisit-localizers")  # weight level: lr_weight_level


def test_method_parameters_reach_the_methods():
    cfg = config.from_params("oracle-vs-random", {"npo_beta": 0.25, "memflex_mu": 0.5, "wagle_gamma": 1e-6,
                                                  "rmu_layer": 1, "seed": 5})
    assert config.method_params(cfg, "objective", "npo") == {"beta": 0.25}
    assert config.method_params(cfg, "objective", "rmu") == {"layer": 1, "c": 2.0, "tokens": "answer", "seed": 5}
    assert config.method_params(cfg, "localizer", "memflex") == {"mu": 0.5, "repeats": 3, "batch_size": 8, "seed": 5}
    assert config.method_params(cfg, "localizer", "wagle")["gamma"] == 1e-6
    assert config.from_params("oracle-vs-random", {}).rmu_layer is None
    assert "'wagle_gamma': expected float, got str" in problems("oracle-vs-random", wagle_gamma="x")


def test_all_problems_reported_together():
    err = pytest.raises(config.ConfigError, config.from_params, "oracle-vs-random", {"sede": 1, "n_alpha": 1, "device": "gpu"})
    assert len(err.value.problems) == 3


def test_a_method_registered_later_is_known_at_once():
    import dataclasses

    from workbench import objectives as obj

    @obj.register
    @dataclasses.dataclass
    class Shrink(obj.Objective):
        name = "shrink_test"
        default_lr = 0.5
        gamma: float = dataclasses.field(default=2.0, metadata={"help": "how much"})

    try:
        cfg = config.from_params("lume", {"objectives": ["shrink_test"], "shrink_test_gamma": 3.0})
        assert cfg.lr_for("shrink_test") == 0.5 and config.method_params(cfg, "objective", "shrink_test") == {"gamma": 3.0}
    finally:
        del obj.OBJECTIVES["shrink_test"]
    assert "unknown objective 'shrink_test'" in problems("lume", objectives=["shrink_test"])


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


def test_rmu_layer_checked_against_the_tiny_models_depth():
    assert "'rmu_layer' = 4 is outside the model's 4 decoder layers" in problems("oracle-vs-random", rmu_layer=4, tiny_layers=4)
    config.from_params("oracle-vs-random", {"rmu_layer": 3, "tiny_layers": 4})
    config.from_params("lume", {"rmu_layer": 9, "tiny_layers": 4})  # lume does not train with rmu


def test_relative_paths_resolve_against_the_callers_directory(tmp_path):
    params = config.absolute_paths({"data_dir": "data/tofu", "plugins": ["mine.py", "my_pkg.mod"]}, tmp_path)
    assert params["data_dir"] == str(tmp_path / "data" / "tofu")
    assert params["plugins"] == [str(tmp_path / "mine.py"), "my_pkg.mod"]


def test_data_dir_from_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_TOFU_DIR", "/data/tofu")
    assert config.from_params("oracle-vs-random", {"data": "tofu"}).data_path() == "/data/tofu"
    assert config.from_params("oracle-vs-random", {"data": "tofu", "data_dir": "/x"}).data_path() == "/x"
    assert config.from_params("oracle-vs-random", {}).data_path() == ""


def test_describe_lists_help():
    rows = {name: (typ, default, text) for name, typ, default, text in config.describe("lume")}
    assert rows["forget_ratio"][1] == 0.1 and "people" in rows["forget_ratio"][2]


@pytest.mark.unit
def test_random_regions_per_target_seed_get_distinct_seeds():
    cfg = config.from_params("oracle-vs-random", {"region_seeds": [7, 19], "random_per_seed": 3})
    assert cfg.random_seeds_for(7) == [7001, 7002, 7003] and cfg.random_seeds_for(19) == [19001, 19002, 19003]
    assert config.from_params("lume", {}).random_per_seed == 2  # default: one Random–Random pair per θo
    with pytest.raises(config.ConfigError, match=r"'random_per_seed'.*seeds \[1\] collide"):
        config.from_params("oracle-vs-random", {"region_seeds": [0, 1], "random_per_seed": 1})
