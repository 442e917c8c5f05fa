"""Localizers (SPEC §4): scores against hand computations on tiny models, MemFlex's exact budget,
AUROC by hand, and a planted-region sanity check where the ground truth is known."""

import itertools

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench import localizers as loc
from workbench import objectives as obj
from workbench.data.formatting import collate
from workbench.localizers.memflex import memflex_rank_score, randomize_answer
from workbench.models import architectures as arch
from workbench.regions import Region, WeightRegion, random_region
from workbench.training import TrainConfig, TrainSpec, train_region

pytestmark = pytest.mark.integration


def _hand_coefficients(model, item):
    """Memory coefficients of one example recomputed from the MLP input: act(gate x) · up x."""
    inputs = []
    handles = [arch.mlp_module(model, l).register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for l in range(2)]
    with torch.no_grad():
        model(input_ids=torch.tensor([item.input_ids]))
        coeffs = [m.act_fn(m.gate_proj(x)) * m.up_proj(x) for m, x in zip((arch.mlp_module(model, l) for l in range(2)), inputs)]
    for h in handles:
        h.remove()
    return [c[0] for c in coeffs]  # [pos, d_ff] per layer


@pytest.mark.parametrize("reduce", ["mean_abs", "abs_mean"])
def test_activations_equal_hand_computation(reduce):
    model = make_tiny("llama")
    forget = random_examples(5, seed=3)
    per_example = []
    for item in forget:
        rows = slice(item.prompt_len - 1, len(item.input_ids) - 1)  # positions predicting answer tokens
        coeffs = _hand_coefficients(model, item)
        pooled = [c[rows].abs().mean(0) if reduce == "mean_abs" else c[rows].mean(0).abs() for c in coeffs]
        per_example.append(torch.stack(pooled))
    norms = torch.stack([arch.down_proj(model, l).weight.norm(dim=0) for l in range(2)])
    raw = torch.stack(per_example).mean(0) * norms
    expected = (raw - raw.mean(1, keepdim=True)) / raw.std(1, correction=0, keepdim=True)
    got = loc.score("activations", model, forget, [], 0, reduce=reduce, batch_size=3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    unnormalised = loc.score("activations", model, forget, [], 0, reduce=reduce, normalize="none")
    torch.testing.assert_close(unnormalised, raw, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fraction", [0.1, 0.37])
def test_memflex_selects_exactly_the_fraction(fraction):
    model = make_tiny("llama")
    result = loc.localize("memflex", model, random_examples(4), random_examples(4, seed=1), 0, fraction, repeats=2, seed=0)
    assert isinstance(result.region, Region)
    assert result.region.size == round(fraction * 2 * 64)
    assert sum(result.summary()["per_layer_counts"]) == result.region.size


def test_memflex_rank_score_prefers_low_cosine_then_norm():
    norm = torch.tensor([[5.0, 1.0, 3.0, 9.0]])
    cos = torch.tensor([[0.99, 0.1, 0.2, 0.97]])
    order = torch.argsort(memflex_rank_score(norm, cos, 0.95).flatten(), descending=True).tolist()
    assert order == [2, 1, 3, 0]  # passers by norm, then the rest by norm


def _hand_memflex(model, down_weights, vector_of, forget, retain, repeats, seed):
    """g_unl, g_ret per value vector ``[layer, d_ff, d_model]`` from explicit per-example backward
    passes: answer-token NLL of each random-answer copy, gradient of the down-projection weight."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    out = []
    for items in (forget, retain):
        total = [torch.zeros_like(w) for w in down_weights]
        copies = [randomize_answer(it, vocab, 0, gen) for it in items for _ in range(repeats)]
        for c in copies:
            ids = torch.tensor([c.input_ids])
            logits = model(input_ids=ids).logits[0, c.prompt_len - 1 : -1]
            loss = torch.nn.functional.cross_entropy(logits, ids[0, c.prompt_len :])
            for acc, g in zip(total, torch.autograd.grad(loss, down_weights)):
                acc += g / len(copies)
        out.append(torch.stack([torch.stack([vector_of(g, j) for j in range(g.shape[0])]) for g in total]))
    return out


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_memflex_scores_equal_hand_gradients_on_the_vector_axis(model_type):
    """Square down-projections (d_ff = d_model) so a wrong axis keeps the shapes and only the values
    tell; μ at the median cosine so a flipped gradient sign changes which vectors pass."""
    model = make_tiny(model_type, d_ff=32).double()
    if model_type == "llama":  # nn.Linear(d_ff → d_model): weight [d_model, d_ff], vector j = column j
        weights, vector_of = [layer.mlp.down_proj.weight for layer in model.model.layers], lambda g, j: g[:, j]
    else:  # GPT-2's Conv1D: weight [d_ff, d_model], vector j = row j
        weights, vector_of = [block.mlp.c_proj.weight for block in model.transformer.h], lambda g, j: g[j]
    forget, retain = random_examples(3, seed=4), random_examples(3, seed=5)
    g_unl, g_ret = _hand_memflex(model, weights, vector_of, forget, retain, repeats=2, seed=0)
    cos = torch.nn.functional.cosine_similarity(g_unl, g_ret, dim=-1)
    middle = cos.flatten().sort().values[cos.numel() // 2 - 1 : cos.numel() // 2 + 1]
    mu = float(middle.mean())  # between two cosines: no vector sits on the threshold
    expected = memflex_rank_score(g_unl.norm(dim=-1), cos, mu)
    got = loc.score("memflex", model, forget, retain, 0, mu=mu, repeats=2, seed=0, batch_size=2)
    assert 0.3 < (cos < mu).float().mean() < 0.7
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-9)


def test_memflex_randomizes_answers_only_and_never_pads():
    item = random_examples(1)[0]
    gen = torch.Generator().manual_seed(0)
    out = [randomize_answer(item, 64, 0, gen) for _ in range(50)]
    assert all(o.prompt_ids == item.prompt_ids and len(o.input_ids) == len(item.input_ids) for o in out)
    assert all(0 not in o.input_ids[o.prompt_len:] for o in out)
    assert any(o.input_ids != item.input_ids for o in out)


def test_wagle_weight_scores_equal_explicit_per_parameter_computation():
    model = make_tiny("llama").double()
    forget, retain = random_examples(3, seed=4), random_examples(4, seed=5)
    weights = [arch.down_proj(model, l).weight for l in range(2)]

    def grad_of(item):
        for p in model.parameters():
            p.requires_grad_(p is weights[0] or p is weights[1])
        batch = collate([item], 0)
        return torch.autograd.grad(obj.mean_nll(obj.forward_logits(model, batch), batch["labels"]), weights)

    g_f = [sum(gs) / len(forget) for gs in zip(*map(grad_of, forget))]
    per_retain = [grad_of(x) for x in retain]
    g_r = [sum(gs) / len(retain) for gs in zip(*per_retain)]
    gamma = torch.cat([sum(g[l] ** 2 for g in per_retain).flatten() / len(retain) for l in range(2)]).mean()
    got = loc.score("wagle_weights", model, forget, retain, 0, batch_size=2)
    for l in range(2):
        w = weights[l].detach()
        for i, j in itertools.product(range(0, 32, 7), range(0, 64, 13)):
            expected = abs(w[i, j] * g_f[l][i, j] - g_r[l][i, j] * g_f[l][i, j] / gamma)
            assert got[l][i, j].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-12)
    # finite differences confirm the forget gradient of one entry
    eps, (i, j) = 3e-2, (3, 5)  # large: RMSNorm runs in fp32 even in a float64 model
    batch = collate(forget, 0)

    def mean_example_nll():  # in float64 throughout (token_logprobs computes in fp32)
        with torch.no_grad():
            logp = obj.forward_logits(model, batch)[:, :-1].log_softmax(-1)
            labels = batch["labels"][:, 1:]
            picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1) * (labels != -100)
            return (-picked.sum(-1) / (labels != -100).sum(-1)).mean().item()

    with torch.no_grad():
        weights[1][i, j] += eps
    up = mean_example_nll()
    with torch.no_grad():
        weights[1][i, j] -= 2 * eps
    down = mean_example_nll()
    with torch.no_grad():
        weights[1][i, j] += eps
    assert (up - down) / (2 * eps) == pytest.approx(g_f[1][i, j].item(), rel=2e-2)
    vector = loc.score("wagle", model, forget, retain, 0)
    torch.testing.assert_close(vector, torch.stack([got[l].mean(0) for l in range(2)]).float())


def test_weight_level_localize_returns_weight_region():
    model = make_tiny("llama")
    result = loc.localize("wagle_weights", model, random_examples(3), random_examples(3, seed=1), 0, 0.8)
    assert isinstance(result.region, WeightRegion)
    assert result.region.size == round(0.8 * 2 * 32 * 64)


def test_unknown_localizer_and_parameter():
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="unknown localizer"):
        loc.score("hardconcrete", model, [], [], 0)
    with pytest.raises(ValueError, match="bad parameters"):
        loc.score("random", model, [], [], 0, temperature=2)
    r1, r2 = loc.score("random", model, [], [], 0, seed=1), loc.score("random", model, [], [], 0, seed=1)
    assert torch.equal(r1, r2) and r1.shape == (2, 64)


@pytest.mark.unit
def test_auroc_with_ties_equals_pairwise_count():
    scores = torch.tensor([0.1, 0.4, 0.4, 0.8, 0.4, 0.2, 0.8])
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0]).bool()
    pos, neg = scores[labels].tolist(), scores[~labels].tolist()
    by_hand = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    assert loc.auroc(scores, labels) == pytest.approx(by_hand)
    assert loc.auroc(torch.tensor([0.1, 0.35, 0.4, 0.8]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.75)
    assert loc.average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.unit
def test_localization_accuracy_precision_recall():
    target = Region(2, 5, {0: [1], 1: [0, 4]})
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.0, 0.0], [0.7, 0.0, 0.0, 0.0, 0.1]])
    acc = loc.localization_accuracy(scores, target)
    assert acc["k"] == 3 and acc["hits"] == 2 and acc["precision"] == pytest.approx(2 / 3)
    assert loc.localization_accuracy(scores, target, k=5)["recall"] == 1.0


def _forget_nll(model, items):
    batch = collate(items, 0)
    with torch.no_grad():
        return obj.mean_nll(obj.forward_logits(model, batch), batch["labels"]).item()


def test_planted_region_sanity():
    """Inject random facts into V_tgt only, then ask how well scores recover V_tgt."""
    model = make_tiny("llama")
    target = random_region(model, 0.1, seed=7)
    forget, retain = random_examples(6, seed=11), random_examples(6, seed=12)
    inject = TrainConfig(lr=0.3, epochs=30, batch_size=6, weight_decay=0.0, max_grad_norm=None, schedule="constant")
    before = _forget_nll(model, forget)
    delta, _ = train_region(model, target, TrainSpec(forget, inject, 0, progress=False))
    delta.merge()
    after = _forget_nll(model, forget)
    print(f"\nplanted: forget NLL {before:.2f} -> {after:.2f} after injection into V_tgt")
    assert after < before - 0.2
    perfect = loc.localization_accuracy(target.mask().float(), target)
    assert perfect["precision"] == 1.0 and perfect["recall"] == 1.0 and perfect["auroc"] == 1.0
    draws = [loc.localization_accuracy(loc.score("random", model, [], [], 0, seed=s), target) for s in range(200)]
    assert sum(d["precision"] for d in draws) / len(draws) == pytest.approx(target.fraction, abs=0.03)
    assert sum(d["auroc"] for d in draws) / len(draws) == pytest.approx(0.5, abs=0.03)
    member = target.mask().flatten()
    for name, params in (("activations", {}), ("wagle", {}), ("memflex", {"repeats": 2})):
        scores = loc.score(name, model, forget, retain, 0, **params)
        acc = loc.localization_accuracy(scores, target)
        # reported, not asserted: how the localizers fare when the ground truth is known
        print(f"planted V_tgt ({target.size} of {target.total}): {name} precision {acc['precision']:.2f} "
              f"auroc {acc['auroc']:.2f}")
        # golden: the share of (V_tgt, other) vector pairs that the scores order rightly, ties ½
        inside, outside = scores.flatten()[member, None].double(), scores.flatten()[None, ~member].double()
        by_hand = ((inside > outside).double() + 0.5 * (inside == outside).double()).mean().item()
        assert acc["auroc"] == pytest.approx(by_hand, abs=1e-9), name


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox"])
def test_every_localizer_and_hooked_objective_runs_on_other_layouts(model_type):
    model = make_tiny(model_type)
    forget, retain = random_examples(3), random_examples(3, seed=1)
    for name in sorted(loc.LOCALIZERS):
        result = loc.localize(name, model, forget, retain, 0, 0.1)
        assert result.region.size > 0 and sum(result.region.per_layer_counts()) == result.region.size, name
    batch = collate(forget, 0)
    assert obj.make("rmu")(model, batch, obj.ObjectiveContext()).item() > 0
    assert obj.make("l2_mlp")(model, batch, obj.ObjectiveContext(reference_model=model)).item() == 0.0
