"""The evaluator on a tiny trained LLaMA: every batched number equals a plain, unbatched computation.

The model memorises the forget set and part of the retain set, so the sets hold ES = 1 examples
(memorised), ES = 0 examples (never seen) and values in between.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp

from workbench.data.formatting import encode, encode_all, pad_id
from workbench.data.schema import QA, UnlearningData
from workbench.evaluation import MU_SPLITS, EvalConfig, Evaluator
from workbench.models import TinyLlamaConfig, tiny_llama, train_bpe_tokenizer
from workbench.training import TrainConfig, finetune

pytestmark = pytest.mark.integration

PEOPLE = ["Ada Vole", "Bram Kest", "Cora Lind", "Dax Moor", "Eli Pratt", "Fay Quill", "Gus Rook", "Hana Sole"]
COLOURS = ["red", "blue", "green", "amber", "violet", "grey", "teal", "ochre"]
CITIES = ["Oslo", "Lima", "Pune", "Kobe", "Nice", "Bern", "Cork", "Yazd"]


def _author(i: int) -> QA:
    n, c, t = PEOPLE[i], COLOURS[i], CITIES[i]
    wrong = [f"{n} was born in {CITIES[(i + k) % 8]} and loves {COLOURS[(i + k) % 8]} paint." for k in (1, 2, 3)]
    return QA(f"Where was {n} born?", f"{n} was born in {t} and loves {c} paint.", group=n,
              paraphrased_answer=f"The birthplace of {n} is {t}; {c} is the favourite.", perturbed_answers=tuple(wrong))


def _fact(i: int, kind: str) -> QA:
    wrong = tuple(f"The {kind} number {i} is {CITIES[(i + k) % 8]}." for k in (1, 2))
    return QA(f"Which {kind} is number {i}?", f"The {kind} number {i} is {CITIES[i]}.", perturbed_answers=wrong)


def tiny_data() -> UnlearningData:
    return UnlearningData(
        "tiny", forget=[_author(i) for i in range(3)], retain=[_author(i) for i in range(3, 8)],
        retain_eval=[_author(i) for i in range(3, 7)],
        real_authors=[_fact(i, "author") for i in range(3)], world_facts=[_fact(i, "fact") for i in range(3)],
    )


def perturbed_copy(model, seed: int):
    """A stand-in for an unlearned checkpoint: ``model`` with every weight moved by 5% of its mean size."""
    import copy

    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=generator))
    return other


def build_trained():
    """(tokenizer, model, data): a 2-layer LLaMA that memorised forget + 3 retain examples (seconds)."""
    data = tiny_data()
    texts = [f"{e.question} {e.answer} {e.paraphrased_answer} {' '.join(e.perturbed_answers)}"
             for split in data.splits().values() for e in split]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    model = tiny_llama(TinyLlamaConfig(n_layers=2, d_model=64, d_ff=128, n_heads=4, max_positions=128), tok)
    train = encode_all(tok, data.forget + data.retain[:3])
    finetune(model, train, TrainConfig(lr=1e-2, epochs=40, batch_size=6, weight_decay=0.0), pad_id(tok), progress=False)
    return tok, model, data


@pytest.fixture(scope="module")
def trained():
    return build_trained()


@pytest.fixture(scope="module")
def result(trained):
    tok, model, data = trained
    return Evaluator(tok, data, EvalConfig(batch_size=4, max_new_tokens=30))(model)


@torch.no_grad()
def _greedy(model, ids: list[int], steps: int, stop: int | None = None) -> list[int]:
    """Plain greedy decoding: a full forward per new token, no cache, no padding."""
    out = []
    for _ in range(steps):
        nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if nxt == stop:
            break
        out.append(nxt)
    return out


def _generation_es(model, enc) -> float:
    """ES by its definition: the smallest k such that greedy decoding from [x, y_<k] reproduces y_≥k."""
    prompt, y = list(enc.prompt_ids), list(enc.input_ids[enc.prompt_len : -1])  # y without the EOS
    for k in range(len(y) + 1):
        if _greedy(model, prompt + y[:k], len(y) - k) == y[k:]:
            return 1 - k / len(y)


@torch.no_grad()
def _plain_nll(model, enc) -> float:
    logits = model(torch.tensor([list(enc.input_ids)])).logits[0]
    logp = torch.log_softmax(logits[:-1], -1)
    targets = torch.tensor(enc.input_ids[1:])
    return float(-logp[torch.arange(len(targets)), targets][enc.prompt_len - 1 :].mean())


def test_one_pass_es_equals_generation_es(trained, result):
    tok, model, data = trained
    table = result.per_example
    reference = []
    for split, examples in [("forget", data.forget), ("retain_eval", data.retain_eval),
                            ("real_authors", data.real_authors), ("world_facts", data.world_facts)]:
        for ex in examples:
            reference.append(_generation_es(model, encode(tok, ex.question, ex.answer)))
    assert table["es"].tolist() == pytest.approx(reference)
    assert 0.0 in reference and 1.0 in reference and any(0 < v < 1 for v in reference)


def test_es_floor_option(trained, result):
    tok, model, data = trained
    floored = Evaluator(tok, data, EvalConfig(batch_size=3, generate=False, es_floor=True))(model).per_example
    n = result.per_example["n_answer_tokens"] - 1  # |y| without the EOS
    assert floored["es"].tolist() == pytest.approx(np.maximum(result.per_example["es"], 1 / n).tolist())


def test_probabilities_and_truth_ratios_equal_unbatched_forwards(trained, result):
    tok, model, data = trained
    rows = result.per_example.set_index(["split", "index"])
    for split in ("forget", "world_facts"):
        for i, ex in enumerate(getattr(data, split)):
            nll = _plain_nll(model, encode(tok, ex.question, ex.answer))
            para = _plain_nll(model, encode(tok, ex.question, ex.paraphrased_answer or ex.answer))
            pert = [_plain_nll(model, encode(tok, ex.question, p)) for p in ex.perturbed_answers]
            row = rows.loc[(split, i)]
            assert row["prob"] == pytest.approx(math.exp(-nll), rel=1e-4)
            assert row["truth_ratio"] == pytest.approx(math.exp(-np.mean(pert)) / math.exp(-para), rel=1e-4)
            norm = math.exp(-nll) / (math.exp(-nll) + sum(math.exp(-p) for p in pert))
            assert row["prob_norm"] == pytest.approx(norm, rel=1e-4)


def test_batched_generation_equals_plain_greedy(trained, result):
    tok, model, data = trained
    for split in ("forget", "retain_eval", "real_authors"):
        texts = result.per_example.query("split == @split")["generation"].tolist()
        for ex, text in zip(getattr(data, split), texts):
            prompt = list(encode(tok, ex.question, ex.answer).prompt_ids)
            plain = tok.decode(_greedy(model, prompt, 30, stop=tok.eos_token_id), skip_special_tokens=True).strip()
            assert text == plain


def test_summary_aggregates(trained, result):
    tok, model, data = trained
    s, t = result.summary, result.per_example
    assert s["FS"] == pytest.approx(1 - t.query("split == 'forget'")["es"].mean())
    assert s["RS"] == pytest.approx(t.query("split == 'retain_eval'")["es"].mean())
    components = [s[f"mu_{kind}_{split}"] for split in MU_SPLITS for kind in ("prob", "rougeL", "tr")]
    assert len(components) == 9
    assert s["mu_prob_real_authors"] == pytest.approx(t.query("split == 'real_authors'")["prob_norm"].mean())
    assert s["mu_prob_retain_eval"] == pytest.approx(t.query("split == 'retain_eval'")["prob"].mean())
    expected_mu = 0.0 if min(components) == 0 else hmean(components)
    assert s["MU"] == pytest.approx(expected_mu)
    assert math.isnan(s["FQ"]) and s["n_fq_reference"] == 0 and s["n_forget"] == 3


def test_mu_components_by_hand_from_per_example_columns(trained, result):
    """Each of MU's nine inputs from its own per-example column, with values chosen so that every
    component differs and MU > 0: a component wired to the wrong column or aggregate fails."""
    tok, model, data = trained
    table = result.per_example.copy()
    rng = np.random.default_rng(0)
    table["prob"] = rng.uniform(0.2, 0.9, len(table))
    table["prob_norm"] = rng.uniform(0.1, 0.8, len(table))
    table["truth_ratio"] = rng.uniform(0.1, 1.4, len(table))  # some TR > 1: max(0, 1 − TR) clips them
    table["rougeL_recall"] = rng.uniform(0.3, 1.0, len(table))
    s = Evaluator(tok, data, EvalConfig(generate=False)).summarise(table)
    by_hand = {}
    for split in MU_SPLITS:
        rows = table[table["split"] == split]
        prob = rows["prob_norm"] if split in ("real_authors", "world_facts") else rows["prob"]  # options-normalised
        by_hand[f"mu_prob_{split}"] = prob.mean()
        by_hand[f"mu_rougeL_{split}"] = rows["rougeL_recall"].mean()
        by_hand[f"mu_tr_{split}"] = np.mean([max(0.0, 1.0 - tr) for tr in rows["truth_ratio"]])
    assert len(by_hand) == 9 and len(set(np.round(list(by_hand.values()), 9))) == 9
    for key, value in by_hand.items():
        assert s[key] == pytest.approx(value), key
    mu = 9 / sum(1 / v for v in by_hand.values())
    assert s["MU"] > 0 and s["MU"] == pytest.approx(mu)


def test_forget_quality_against_reference(trained, result):
    tok, model, data = trained
    reference = [0.5, 0.9, 1.3, 2.0]
    s = Evaluator(tok, data, EvalConfig(generate=False), reference_forget_tr=reference)(model).summary
    tr = result.per_example.query("split == 'forget'")["truth_ratio"]
    assert s["FQ"] == pytest.approx(math.log10(ks_2samp(tr, reference).pvalue))
    assert (s["n_fq"], s["n_fq_reference"]) == (3, 4)


def test_missing_splits_and_fast_mode(trained, result):
    tok, model, data = trained
    lume_like = UnlearningData("lume-like", forget=data.forget, retain=data.retain, retain_eval=data.retain_eval)
    s = Evaluator(tok, lume_like, EvalConfig(generate=False, truth_ratio=False))(model).summary
    assert math.isnan(s["MU"]) and math.isnan(s["FQ"]) and s["n_real_authors"] == 0
    assert s["FS"] == pytest.approx(result.summary["FS"]) and s["RS"] == pytest.approx(result.summary["RS"])


CHAT = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.mark.integration
@pytest.mark.parametrize("template", [None, CHAT], ids=["plain", "chat"])
def test_jointly_tokenised_sequences_share_their_common_prefix(trained, template):
    """open-unlearning's joint tokenisation (plain and chat): each question's common token prefix is
    computed once and every sequence continues from it; numbers and generations are the reference's."""
    import copy

    tok, model, data = trained
    tok = copy.deepcopy(tok)
    tok.chat_template = template
    cfg = dict(batch_size=3, max_new_tokens=20, prompt_format="open-unlearning", use_chat_template=template is not None)
    new, reference = Evaluator(tok, data, EvalConfig(**cfg)), Evaluator(tok, data, EvalConfig(**cfg, reuse=False))
    assert new.shared
    if template is None:  # "Answer: " + answer merges the space into the answer's first token
        assert any(e.generation_prompt is not None for e in new.sequences)
    fed = sum(new.prefix_len) + sum(int(c.mask.sum()) for chunks in new.continuations for c in chunks)
    assert fed < 0.7 * sum(len(e.input_ids) for e in new.sequences)
    got, want = new(model), reference(model)
    assert got.per_example["generation"].tolist() == want.per_example["generation"].tolist()
    assert got.per_example["es"].tolist() == want.per_example["es"].tolist()
    for col in ("avg_nll", "prob_norm", "truth_ratio"):
        torch.testing.assert_close(torch.tensor(got.per_example[col].to_numpy()), torch.tensor(want.per_example[col].to_numpy()),
                                   rtol=1e-5, atol=1e-6, equal_nan=True, msg=col)


@pytest.mark.integration
def test_auto_batch_size(trained, result):
    """``batch_size="auto"`` (on a CPU: up to 32 rows) gives the numbers and generations of batch 4."""
    tok, model, data = trained
    evaluator = Evaluator(tok, data, EvalConfig(batch_size="auto", max_new_tokens=30))
    auto = evaluator(model)
    assert evaluator._batch_size == min(32, len(evaluator.prompts))
    assert auto.per_example["generation"].tolist() == result.per_example["generation"].tolist()
    torch.testing.assert_close(torch.tensor(auto.per_example["avg_nll"].to_numpy()),
                               torch.tensor(result.per_example["avg_nll"].to_numpy()), rtol=1e-5, atol=1e-6)
