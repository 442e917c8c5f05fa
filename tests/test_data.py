"""Data loaders: real TOFU / LUME files split as documented, synthetic sets are seeded, errors name the fix."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from workbench.data import DATASETS, DataError, config_data, load_data, subsample, tokenizer_corpus
from workbench.data import tofu as tofu_mod
from workbench.data.lume import load_lume
from workbench.data.synthetic import synthetic_lume, synthetic_tofu
from workbench.data.tofu import load_tofu, load_tofu_split
from workbench.runs.config import from_params
from workbench.runs.params import CONFIGS


def _groups(examples) -> Counter:
    return Counter(ex.group for ex in examples)


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- synthetic ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_synthetic_tofu_structure():
    data = synthetic_tofu(n_authors=6, n_forget_authors=2)
    assert len(data.forget) == 40 and len(data.retain) == 80 and len(data.retain_eval) == 40
    assert set(_groups(data.forget).values()) == {20} and set(_groups(data.retain).values()) == {20}
    assert not set(_groups(data.forget)) & set(_groups(data.retain))
    assert data.has_truth_ratio and data.refusals
    for ex in data.forget + data.retain:
        assert ex.paraphrased_answer and len(ex.perturbed_answers) == 5
        assert len(set(ex.perturbed_answers)) == 5 and ex.paraphrased_answer not in ex.perturbed_answers
    for ex in data.real_authors + data.world_facts:
        assert ex.paraphrased_answer is None and len(ex.perturbed_answers) == 5 and ex.answer not in ex.perturbed_answers
    pretrain_questions = {ex.question for ex in data.pretrain}
    assert {ex.question for ex in data.real_authors + data.world_facts} <= pretrain_questions
    assert {ex.question for ex in data.retain_eval} <= {ex.question for ex in data.retain}


@pytest.mark.unit
@pytest.mark.parametrize("make", [synthetic_tofu, synthetic_lume])
def test_synthetic_is_deterministic_per_seed(make):
    assert make(seed=3).fingerprint() == make(seed=3).fingerprint()
    assert make(seed=3).fingerprint() != make(seed=4).fingerprint()


@pytest.mark.unit
def test_synthetic_lume_shape_and_person_split():
    data = synthetic_lume(n_people=20, forget_ratio=0.1)
    assert len(data.forget) == 2 * 6 and len(data.retain) == 18 * 6 and len(data.retain_eval) == 12
    assert set(_groups(data.forget + data.retain).values()) == {6}
    assert not set(_groups(data.forget)) & set(_groups(data.retain))
    assert all(len(ex.group) == 36 for ex in data.forget)


@pytest.mark.unit
def test_registry_and_corpus():
    assert set(DATASETS) == {"synthetic-tofu", "synthetic-lume", "tofu", "lume"}
    with pytest.raises(ValueError, match="synthetic-tofu"):
        load_data("tofu-large")
    data = load_data("synthetic-tofu", n_authors=3, n_forget_authors=1)
    corpus = set(tokenizer_corpus(data))
    ex = data.forget[0]
    assert {ex.question, ex.answer, ex.paraphrased_answer, *ex.perturbed_answers, *data.refusals} <= corpus


# -- TOFU -----------------------------------------------------------------------------------------
@pytest.fixture
def tofu_dir(shared_data):
    return shared_data / "tofu"


@pytest.mark.integration
def test_tofu_full_structure(tofu_dir):
    data = load_tofu(tofu_dir)
    full = load_tofu_split(tofu_dir, "full")
    assert [(ex.question, ex.answer) for ex in data.forget] == [(ex.question, ex.answer) for ex in full[-400:]]
    assert [(ex.question, ex.answer) for ex in data.retain] == [(ex.question, ex.answer) for ex in full[:3600]]
    assert len(_groups(data.forget)) == 20 and set(_groups(data.forget).values()) == {20}
    assert len(_groups(data.retain)) == 180 and set(_groups(data.retain).values()) == {20}
    assert data.forget[0].group == "author-180" and data.forget[-1].group == "author-199"
    assert data.has_truth_ratio and len(data.retain_eval) == 400
    assert len(data.refusals) == 100  # 99 newlines, last line unterminated
    assert set(_groups(data.retain_eval)) <= set(_groups(data.retain))
    assert len(data.real_authors) == 100 and data.real_authors[0].paraphrased_answer is None
    assert len(data.world_facts) == 117 and data.world_facts[0].perturbed_answers


@pytest.mark.integration
def test_tofu_subsampling_keeps_whole_authors(tofu_dir):
    data = load_tofu(tofu_dir, n_retain_authors=5, n_forget_authors=2, seed=1)
    assert set(_groups(data.forget)) == {"author-198", "author-199"}
    retain_groups = _groups(data.retain)
    assert len(retain_groups) == 5 and set(retain_groups.values()) == {20}
    assert not set(retain_groups) & set(_groups(data.forget))
    assert set(_groups(data.retain_eval)) <= set(retain_groups) and len(data.retain_eval) >= 20
    assert {ex.question for ex in data.retain_eval} <= {ex.question for ex in data.retain}
    again = load_tofu(tofu_dir, n_retain_authors=5, n_forget_authors=2, seed=1)
    other = load_tofu(tofu_dir, n_retain_authors=5, n_forget_authors=2, seed=2)
    assert again.fingerprint() == data.fingerprint() != other.fingerprint()


@pytest.mark.unit
def test_tofu_general_questions_can_be_subsampled_by_seed(tofu_dir):
    full = load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, seed=3)
    a = load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, n_general=10, seed=3)
    b = load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, n_general=10, seed=4)
    for split in ("real_authors", "world_facts"):
        rows, all_rows = getattr(a, split), getattr(full, split)
        assert len(rows) == 10 and len(all_rows) > 10
        order = [all_rows.index(ex) for ex in rows]
        assert order == sorted(order)  # a draw, kept in file order
        assert getattr(b, split) != rows  # another seed, another draw
    assert a.forget == full.forget and a.retain_eval == full.retain_eval
    assert load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, n_general=0, seed=3).real_authors == full.real_authors


@pytest.mark.unit
def test_tofu_retain_eval_can_be_subsampled_per_author_by_seed(tofu_dir):
    full = load_tofu(tofu_dir, n_retain_authors=3, n_forget_authors=1, seed=3)
    a = load_tofu(tofu_dir, n_retain_authors=3, n_forget_authors=1, n_retain_eval=4, seed=3)
    b = load_tofu(tofu_dir, n_retain_authors=3, n_forget_authors=1, n_retain_eval=4, seed=4)
    authors = {ex.group for ex in full.retain_eval}
    assert len(authors) == 3
    assert {g: sum(ex.group == g for ex in a.retain_eval) for g in authors} == dict.fromkeys(authors, 4)
    order = [full.retain_eval.index(ex) for ex in a.retain_eval]
    assert order == sorted(order)  # a draw, kept in file order
    positions = [[i for i, ex in enumerate(r for r in full.retain_eval if r.group == g) if ex in a.retain_eval]
                 for g in sorted(authors)]
    assert len({tuple(p) for p in positions}) > 1  # each author its own draw, not the same question numbers
    again = load_tofu(tofu_dir, n_retain_authors=3, n_forget_authors=1, n_retain_eval=4, seed=4)
    assert again.retain_eval == b.retain_eval  # seeded
    # training splits and the other evaluation splits are untouched
    assert a.forget == full.forget and a.retain == full.retain and a.real_authors == full.real_authors
    assert load_tofu(tofu_dir, n_retain_authors=3, n_forget_authors=1, n_retain_eval=0, seed=3).retain_eval == full.retain_eval
    # and the notebooks' parameter reaches the loader
    cfg = from_params("oracle-vs-random", {"data": "tofu", "data_dir": str(tofu_dir), "n_retain_authors": 3,
                                           "n_forget_authors": 1, "n_eval_retain": 4, "seed": 3})
    assert config_data(cfg).retain_eval == a.retain_eval


@pytest.mark.integration
def test_tofu_retain_eval_has_truth_ratio_answers_for_every_seed(tofu_dir):
    """Review finding 2: at n_retain_authors=8, 38 of 100 seeds used to draw no author that
    retain_perturbed covers, and MU became NaN. Now every seed's retain_eval carries paraphrased and
    perturbed answers on every row, so the truth ratio (and MU) is defined."""
    for seed in range(100):
        data = load_tofu(tofu_dir, n_retain_authors=8, n_forget_authors=2, seed=seed)
        assert len(data.retain_eval) == 160, seed
        assert all(ex.paraphrased_answer and ex.perturbed_answers for ex in data.retain_eval), seed
    big = load_tofu(tofu_dir, n_retain_authors=30, n_forget_authors=2, seed=0)
    assert len(_groups(big.retain)) == 30 and len(big.retain_eval) == 400


@pytest.mark.integration
def test_tofu_mu_is_finite_on_a_subsample(tofu_dir):
    from workbench.evaluation import EvalConfig, Evaluator
    from workbench.models import TinyLlamaConfig, build_tiny

    for seed in (0, 3):
        data = load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, seed=seed)
        model, tok = build_tiny(data, TinyLlamaConfig(n_layers=1, d_model=32, d_ff=64, n_heads=1), vocab_size=300)
        summary = Evaluator(tok, data, EvalConfig(max_new_tokens=2)).evaluate(model).summary
        components = {k: v for k, v in summary.items() if k.startswith("mu_")}
        assert len(components) == 9 and np.isfinite(list(components.values())).all(), (seed, components)
        assert np.isfinite(summary["MU"]), seed  # 0 here: an untrained model's ROUGE is 0


@pytest.mark.integration
def test_tofu_forget01_pairs_with_retain99(tofu_dir):
    data = load_tofu(tofu_dir, forget_split="forget01")
    assert len(data.forget) == 40 and len(data.retain) == 3960
    with pytest.raises(ValueError, match="forget10"):
        load_tofu(tofu_dir, forget_split="forget20")


@pytest.mark.unit
def test_tofu_missing_file_names_path_and_expected_files(tmp_path):
    with pytest.raises(DataError, match=r"forget10\.jsonl or forget10\.json") as err:
        load_tofu_split(tmp_path, "forget10")
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_tofu(tmp_path / "absent")


@pytest.mark.unit
def test_tofu_bad_rows_name_file_row_and_field(tmp_path):
    _write_jsonl(tmp_path / "full.jsonl", [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": " "}])
    with pytest.raises(DataError, match=r"full\.jsonl: row 2: field 'answer'"):
        load_tofu_split(tmp_path, "full")
    _write_jsonl(tmp_path / "forget01_perturbed.jsonl", [{"question": "q", "answer": "a", "perturbed_answer": ["b"]}])
    with pytest.raises(DataError, match=r"row 1: field 'paraphrased_answer' is missing"):
        load_tofu_split(tmp_path, "forget01_perturbed")


@pytest.mark.unit
def test_tofu_json_list_file_and_hub_path(tmp_path, monkeypatch):
    row = {"question": "q", "answer": "a", "perturbed_answer": ["b", "c"]}
    (tmp_path / "world_facts_perturbed.json").write_text(json.dumps([row]))
    (ex,) = load_tofu_split(tmp_path, "world_facts_perturbed")
    assert ex.perturbed_answers == ("b", "c") and ex.paraphrased_answer is None
    calls = []

    def fake_load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"question": "q", "answer": "a"}]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_tofu_split(tofu_mod.HUB_ID, "full")[0].answer == "a"
    assert calls == [("locuslab/TOFU", "full", "train")]


# -- LUME -----------------------------------------------------------------------------------------
@pytest.mark.integration
def test_lume_resplit_by_person(shared_data):
    data = load_lume(shared_data / "lume", forget_ratio=0.1, seed=0)
    forget_people, retain_people = _groups(data.forget), _groups(data.retain)
    assert len(forget_people) == 50 and len(retain_people) == 450
    assert set(forget_people.values()) == set(retain_people.values()) == {6}
    assert not set(forget_people) & set(retain_people)
    assert len(data.retain_eval) == len(data.forget) and set(_groups(data.retain_eval)) <= set(retain_people)
    assert not data.has_truth_ratio and data.refusals
    assert load_lume(shared_data / "lume", seed=1).fingerprint() != data.fingerprint()
    small = load_lume(shared_data / "lume", n_people=40, forget_ratio=0.25)
    assert len(_groups(small.forget)) == 10 and len(_groups(small.retain)) == 30


@pytest.mark.unit
def test_lume_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"task2_forget\.jsonl not found"):
        load_lume(tmp_path)


@pytest.mark.unit
def test_tofu_pretrain_set_is_the_general_knowledge_a_tiny_model_must_learn(tofu_dir):
    """Without it a tiny θr knows no real author: ROUGE 0 there and MU (a harmonic mean) 0 (seen on real TOFU)."""
    data = load_tofu(tofu_dir, n_retain_authors=2, n_forget_authors=1, n_general=5, seed=1)
    whole = load_tofu_split(tofu_dir, "real_authors_perturbed") + load_tofu_split(tofu_dir, "world_facts_perturbed")
    assert data.pretrain == whole  # whole, however the evaluation splits are subsampled
    assert set(data.real_authors + data.world_facts) <= set(data.pretrain)
    assert not {ex.question for ex in data.pretrain} & {ex.question for ex in data.forget + data.retain}


# -- from a notebook's config ---------------------------------------------------------------------
PARAMS = Path(__file__).resolve().parents[1] / "params"


def _former_loaders(cfg):
    """What the two loaders ``config_data`` replaced gave, as they were: ``pair.config_data`` for
    evaluate-checkpoints, ``chain.load_config_data`` for the experiment notebooks."""
    if cfg.notebook == "evaluate-checkpoints":
        if cfg.data == "tofu":
            data = load_data("tofu", source=cfg.data_path() or "locuslab/TOFU", forget_split=cfg.forget_split,
                             n_retain_authors=cfg.n_retain_authors or None, n_forget_authors=cfg.n_forget_authors or None,
                             seed=cfg.seed)
        else:
            forget = cfg.n_forget_authors or 2
            data = load_data(cfg.data, n_authors=(cfg.n_retain_authors or 8) + forget, n_forget_authors=forget, seed=cfg.seed)
        return subsample(data, cfg.max_examples, cfg.seed)[0]
    args = {"synthetic-tofu": lambda c: {"n_authors": c.n_retain_authors + c.n_forget_authors,
                                         "n_forget_authors": c.n_forget_authors, "seed": c.seed},
            "tofu": lambda c: {"source": c.data_path() or "locuslab/TOFU", "n_retain_authors": c.n_retain_authors,
                               "n_forget_authors": c.n_forget_authors, "n_general": c.n_eval_general,
                               "n_retain_eval": c.n_eval_retain, "seed": c.seed},
            "synthetic-lume": lambda c: {"n_people": c.n_people, "forget_ratio": c.forget_ratio, "seed": c.seed},
            "lume": lambda c: {"folder": c.data_path(), "n_people": c.n_people, "forget_ratio": c.forget_ratio,
                               "seed": c.seed}}
    return load_data(cfg.data, **args[cfg.data](cfg))


def _notebook_params(path: Path) -> tuple[str, dict]:
    """A parameter file's notebook and parameters (a rehearsal overlay on top of the file it overlays)."""
    params = yaml.safe_load(path.read_text()) or {}
    if path.parent.name != "rehearsal":
        return path.parent.name, params
    base = "default.yaml" if path.stem == "evaluate-checkpoints" else "paper-llama.yaml"
    return path.stem, yaml.safe_load((PARAMS / path.stem / base).read_text()) | params


CONFIG_CASES = ([(nb, {}) for nb in sorted(CONFIGS)]
                + [_notebook_params(p) for p in sorted(PARAMS.glob("*/*.yaml")) if p.parent.name != "campaign"]
                + [("evaluate-checkpoints", {"data": "synthetic-tofu", "seed": 3}),
                   ("evaluate-checkpoints", {"n_retain_authors": 5, "n_forget_authors": 1, "forget_split": "forget05",
                                             "max_examples": 7, "seed": 2})])


@pytest.mark.integration
@pytest.mark.parametrize("notebook, params", CONFIG_CASES, ids=[f"{nb}-{i}" for i, (nb, _) in enumerate(CONFIG_CASES)])
def test_config_data_gives_what_each_former_loader_gave(notebook, params, shared_data):
    """One loader for every notebook's config: each default config and parameter file gets the data the
    loader of its notebook used to give (real TOFU / LUME from the shared folder, not the hub)."""
    cfg = from_params(notebook, {**params, "data_dir": ""})  # a file's folder is relative to the checkout it was written in
    if cfg.data in ("tofu", "lume"):
        cfg = dataclasses.replace(cfg, data_dir=str(shared_data / cfg.data))
    assert config_data(cfg) == _former_loaders(cfg)


@pytest.mark.unit
def test_config_data_names_the_missing_lume_folder(monkeypatch):
    monkeypatch.delenv("WORKBENCH_LUME_DIR", raising=False)
    with pytest.raises(DataError, match=r"data='lume' needs a folder: set data_dir \(or \$WORKBENCH_LUME_DIR\)"):
        config_data(from_params("lume", {"data": "lume"}))
