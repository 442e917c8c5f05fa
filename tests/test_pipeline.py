"""Pipelines: checks that stop meaningless configurations, determinism, and cache reuse."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from workbench import experiments, training
from workbench import localizers as loc
from workbench.experiments import session as pipeline
from workbench.experiments.revisit import localized_region
from workbench.localizers import base
from workbench.runs import config
from workbench.runs.config import method_params

pytestmark = pytest.mark.integration

SMOKE = yaml.safe_load(open("params/oracle-vs-random/smoke.yaml"))


def _cfg(**over):
    return config.from_params("oracle-vs-random", {**SMOKE, "objectives": ["npo"], "localizers": [], **over})


def _run(cfg, cache):
    session = pipeline.open_session(cfg, cache_root=str(cache), progress=False)
    return experiments.run_controlled(session, cfg.region_seeds, cfg.objectives, cfg.notebook)


def test_same_parameters_and_seed_give_identical_results(tmp_path):
    a = _run(_cfg(), tmp_path / "a")
    b = _run(_cfg(), tmp_path / "b")  # separate caches: everything is recomputed
    pd.testing.assert_frame_equal(a.per_example, b.per_example, check_exact=True)
    pd.testing.assert_frame_equal(a.per_alpha, b.per_alpha, check_exact=True)


def test_second_run_is_served_from_cache_and_a_changed_input_recomputes(tmp_path, monkeypatch):
    first = _run(_cfg(), tmp_path)
    calls = []
    original = training.run_loop
    monkeypatch.setattr(training, "run_loop", lambda *a, **k: calls.append(k.get("desc")) or original(*a, **k))
    again = _run(_cfg(), tmp_path)
    assert calls == []
    pd.testing.assert_frame_equal(first.per_alpha, again.per_alpha)
    _run(_cfg(lr_npo=0.02), tmp_path)
    assert calls and all("npo" in c for c in calls)  # only the unlearning step was recomputed


def test_weak_injection_stops_with_the_parameters_to_change(tmp_path):
    with pytest.raises(pipeline.CheckFailed, match="inject_epochs.*inject_lr"):
        _run(_cfg(min_forget_es=0.99), tmp_path)


def test_fs_rule_names_the_learning_rate():
    rows = pd.DataFrame({"alpha": [0.0, 1.0], "FS": [0.1, 1.0]})
    assert "lower 'lr_npo'" in pipeline.check_fs(rows, lr_key="lr_npo", lr=0.1, what="npo")
    rows["FS"] = [0.1, 0.5]
    assert "raise 'lr_npo'" in pipeline.check_fs(rows, lr_key="lr_npo", lr=0.1, what="npo")
    rows["FS"] = [0.1, 0.9]
    assert pipeline.check_fs(rows, lr_key="lr_npo", lr=0.1, what="npo") is None


def test_retain_damage_is_reported():
    cfg = _cfg(max_retain_es_drop=0.05)
    report = {"forget_es_r": 0.1, "retain_es_r": 0.9, "forget_es_o": 0.95, "retain_es_o": 0.7}
    with pytest.raises(pipeline.CheckFailed, match="lambda_retain"):
        pipeline.check_injection(report, cfg)


def test_general_knowledge_damage_is_reported_and_checked_with_inject_general():
    report = {"forget_es_r": 0.1, "retain_es_r": 0.9, "forget_es_o": 0.95, "retain_es_o": 0.9,
              "general_es_r": 1.0, "general_es_o": 0.3}
    pipeline.check_injection(report, _cfg(max_retain_es_drop=0.05))  # SPEC's injection: reported, not checked
    with pytest.raises(pipeline.CheckFailed, match="general-knowledge set: its ES fell by 0.700.*lambda_retain"):
        pipeline.check_injection(report, _cfg(max_retain_es_drop=0.05, inject_general=True))


def test_inject_general_adds_the_general_set_to_the_retain_term(tmp_path, monkeypatch):
    from workbench.regions import random_region

    seen = []
    original = pipeline.train_region
    monkeypatch.setattr(pipeline, "train_region",
                        lambda model, region, spec: seen.append(len(spec.retain)) or original(model, region, spec))
    session = pipeline.open_session(_cfg(inject_general=True), cache_root=str(tmp_path), progress=False)
    n_retain, n_general = len(session.items["retain"]), len(session.items["general"])
    assert n_general > 0
    region = random_region(session.model, session.cfg.region_fraction, 7)
    _, report = session.inject(region, check=False)
    assert seen == [n_retain + n_general]
    assert {"general_es_r", "general_es_o"} <= set(report) and 0 <= report["general_es_o"] <= 1
    session.cfg = _cfg()  # SPEC's injection: retain only, and its own cache entry (not the θo above)
    session.inject(region, check=False)
    assert seen == [n_retain + n_general, n_retain]


def test_summary_and_paper_table_on_a_known_sweep():
    alphas = [0.0, 0.5, 1.0]
    rows = []
    for scenario, fs_end in (("oracle", 0.9), ("random", 0.9)):
        for seed in (1, 2):
            for a in alphas:
                rows.append({"notebook": "x", "objective": "npo", "scenario": scenario, "seed": seed, "alpha": a,
                             "FS": a * fs_end, "RS": 1 - 0.5 * a, "MU": 1 - 0.1 * a, "FQ": -2 + a})
    per_alpha = pd.DataFrame(rows)
    summary = experiments.summarise(per_alpha)
    # RS = 1 - FS/1.8 on [0, 0.9], then flat at 0.5 to FS = 1: area = 0.9 - 0.81/3.6 + 0.05
    assert summary.AUES.tolist() == pytest.approx([0.9 - 0.81 / 3.6 + 0.05] * 4)
    tests = experiments.compare(per_alpha, "oracle", "random", n_rounds=200)
    assert (tests.dAUES == 0).all() and (tests.p_AUES == 1).all()
    table = experiments.paper_table(summary, tests)
    assert table.loc[0, "p AUES paper (mean)"] == 1.0 and table.loc[0, "MU95 reached"] == "2/2"


def test_rmu_layer_beyond_depth_fails_before_training():
    with pytest.raises(config.ConfigError, match="rmu_layer"):
        _cfg(objectives=["rmu"], rmu_layer=5)  # smoke model has 2 layers


def test_sweeps_from_one_start_share_its_first_point(tmp_path, monkeypatch):
    """Every sweep of one θo starts at θo: its α = 0 evaluation runs once, however many sweeps there are."""
    from workbench.evaluation import Evaluator

    def count(random_per_seed: int, cache) -> int:
        calls = []
        original = Evaluator.evaluate
        monkeypatch.setattr(Evaluator, "evaluate",
                            lambda self, m, drafts=None: calls.append(1) or original(self, m, drafts=drafts))
        cfg = _cfg(random_per_seed=random_per_seed, region_seeds=[7])
        session = pipeline.open_session(cfg, cache_root=str(cache), progress=False)
        result = experiments.run_controlled(session, cfg.region_seeds, cfg.objectives, cfg.notebook,
                                            random_seeds=cfg.random_seeds_for)
        assert result.per_alpha.groupby(["scenario", "seed"]).ngroups == 1 + random_per_seed
        return len(calls)

    one, two = count(1, tmp_path / "a"), count(2, tmp_path / "b")
    n_alpha = SMOKE["n_alpha"]
    assert two - one == n_alpha - 1  # the extra sweep evaluated α > 0 only; unshared it would cost n_alpha


def test_es_summary_gives_the_numbers_of_its_former_batching_loop(tmp_path):
    """es_summary scores through score_sequences (length-sorted batches, logits from the answer on); its
    numbers are those of the loop it replaced: batches of 32 in split order, full logits, ES, mean."""
    from types import SimpleNamespace

    import torch
    from test_evaluation import build_trained

    from workbench.data.formatting import collate, encode_all, pad_id
    from workbench.evaluation import Evaluator
    from workbench.metrics import extraction_strength
    from workbench.runs.cache import Cache

    tok, model, data = build_trained()
    items = {"forget": encode_all(tok, data.forget * 12), "retain_eval": encode_all(tok, data.retain_eval * 12),
             "general": encode_all(tok, (data.real_authors + data.world_facts) * 5)}
    assert len(items["forget"]) > 32 and len({len(e.input_ids) for e in items["forget"]}) > 1  # several batches and lengths

    @torch.no_grad()
    def former(split):
        vals = []
        for start in range(0, len(items[split]), 32):
            b = collate(items[split][start:start + 32], pad_id(tok))
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            vals.append(extraction_strength(logits, b["labels"]))
        return float(torch.cat(vals).mean())

    session = pipeline.Session(SimpleNamespace(), data, model, tok, "θ", Cache(tmp_path), Evaluator(tok, data), items,
                               progress=False)
    got = session.es_summary()
    assert set(got) == set(items) and 0 < got["retain_eval"] < got["forget"]  # memorised forget set, partly the rest
    assert got == {split: pytest.approx(former(split), abs=1e-6) for split in items}


def test_revisit_s_localizer_regions_are_cached_under_theta_full(tmp_path, monkeypatch):
    """A resumed revisit-localizers run (or an export) takes each localizer's region from the cache instead of
    scoring θ_full again; value-vector and weight-level regions come back equal to a fresh localization."""
    smoke = yaml.safe_load(open("params/revisit-localizers/smoke.yaml"))
    cfg = config.from_params("revisit-localizers", {**smoke, "weight_level": True})
    s = pipeline.open_session(cfg, base="full", cache_root=str(tmp_path), progress=False)
    asked = [("activations", 0.1), (cfg.weight_localizer, cfg.weight_fraction)]
    first = [localized_region(s, name, fraction) for name, fraction in asked]
    for (name, fraction), region in zip(asked, first):
        fresh = loc.localize(name, s.model, s.items["forget"], s.items["retain"], s.pad, fraction,
                             **method_params(cfg, "localizer", name)).region
        assert region.fingerprint() == fresh.fingerprint() and region.size == fresh.size > 0
    scored = []
    original = base.score
    monkeypatch.setattr(base, "score", lambda name, *a, **k: scored.append(name) or original(name, *a, **k))
    assert [localized_region(s, n, f).fingerprint() for n, f in asked] == [r.fingerprint() for r in first]
    assert scored == []  # served from the cache
    assert localized_region(s, "activations", 0.2).size > first[0].size and scored == ["activations"]
