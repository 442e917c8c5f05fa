"""Objectives (SPEC §3): each loss against a value computed by hand, the reference-based ones at
zero margin, WGA's stop-gradient, and that every forget objective lowers the forget answers'
likelihood when training is restricted to a region."""

import contextlib
import copy
import math

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench import objectives as obj
from workbench.data.formatting import Encoded, PreferencePair, collate, collate_pairs
from workbench.data.schema import QA
from workbench.objectives.dpo import dpo_loss, dpo_pairs
from workbench.objectives.ga import ga_loss
from workbench.objectives.l2_mlp import l2_mlp_loss
from workbench.objectives.npo import npo_loss
from workbench.objectives.rmu import control_vector, rmu_layer, rmu_loss, rmu_reachable
from workbench.objectives.wga import wga_loss
from workbench.regions import Region, random_region
from workbench.training import TrainConfig, TrainSpec, train_region

# batch 1, pos 4, vocab 3; answer = tokens 2 and 3 (predicted by logits at positions 1 and 2)
LOGITS = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.0, 0.0]]])
LABELS = torch.tensor([[-100, -100, 2, 0]])


def _log_softmax(row, i):
    return row[i] - math.log(sum(math.exp(v) for v in row))


HAND_LOGP = [_log_softmax([1.0, 2.0, 0.5], 2), _log_softmax([0.3, -1.0, 2.0], 0)]


def _null_ctx(**kw):
    return obj.ObjectiveContext(reference=contextlib.nullcontext, **kw)


def _forget_logprob(model, items):
    with torch.no_grad():
        batch = collate(items, 0)
        return obj.sequence_logprob(obj.forward_logits(model, batch), batch["labels"]).mean().item()


@pytest.mark.unit
def test_ga_and_nll_by_hand():
    assert ga_loss(LOGITS, LABELS).item() == pytest.approx(sum(HAND_LOGP) / 2, rel=1e-6)
    assert obj.mean_nll(LOGITS, LABELS).item() == pytest.approx(-sum(HAND_LOGP) / 2, rel=1e-6)
    assert obj.sequence_logprob(LOGITS, LABELS).item() == pytest.approx(sum(HAND_LOGP), rel=1e-6)


@pytest.mark.unit
def test_wga_value_and_stop_gradient():
    alpha = 0.1
    hand = sum(math.exp(lp) ** alpha * lp for lp in HAND_LOGP) / 2
    logits = LOGITS.clone().requires_grad_(True)
    loss = wga_loss(logits, LABELS, alpha)
    assert loss.item() == pytest.approx(hand, rel=1e-6)
    loss.backward()
    # hand gradient of the stop-gradient form: p_t^α · (onehot(y_t) − softmax) / N at the predicting rows
    expected = torch.zeros_like(LOGITS)
    for row, (target, lp) in zip((1, 2), ((2, HAND_LOGP[0]), (0, HAND_LOGP[1]))):
        onehot = torch.nn.functional.one_hot(torch.tensor(target), 3).float()
        expected[0, row] = math.exp(lp) ** alpha * (onehot - LOGITS[0, row].softmax(-1)) / 2
    torch.testing.assert_close(logits.grad, expected)
    # the weight carries no gradient: differentiating p^α·log p fully would give another gradient
    full = LOGITS.clone().requires_grad_(True)
    logp, mask = obj.token_logprobs(full, LABELS)
    ((logp * alpha).exp() * logp).sum().div(mask.sum()).backward()
    assert not torch.allclose(full.grad, expected)


@pytest.mark.unit
def test_npo_and_dpo_by_hand():
    lp, ref = torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -1.5])
    beta = 0.5
    hand_npo = -(2 / beta) * sum(math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in zip(lp, ref)) / 2
    assert npo_loss(lp, ref, beta).item() == pytest.approx(hand_npo, rel=1e-6)
    win, win_ref = torch.tensor([-4.0]), torch.tensor([-5.0])
    margin = beta * ((-4.0 + 5.0) - (-3.0 + 2.0))
    assert dpo_loss(win, win_ref, lp[:1], ref[:1], beta).item() == pytest.approx(
        -(2 / beta) * math.log(1 / (1 + math.exp(-margin))), rel=1e-6
    )


def _pairs(n=4, seed=0):
    lose = random_examples(n, seed=seed)
    refusal = (5, 6, 7)
    return [PreferencePair(Encoded(e.prompt_ids + refusal, e.prompt_len), e) for e in lose]


@pytest.mark.integration
def test_npo_dpo_at_zero_margin_equal_two_over_beta_log_two():
    model = make_tiny("llama")
    for name, batch in (("npo", collate(random_examples(3), 0)), ("dpo", collate_pairs(_pairs(3), 0))):
        loss = obj.make(name, beta=0.5)(model, batch, _null_ctx())
        assert loss.item() == pytest.approx(2 / 0.5 * math.log(2), rel=1e-5), name


@pytest.mark.integration
def test_reference_objectives_demand_a_reference():
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="reference"):
        obj.make("npo")(model, collate(random_examples(2), 0), obj.ObjectiveContext())
    with pytest.raises(ValueError, match="collate_pairs"):
        obj.make("dpo")(model, collate(random_examples(2), 0), _null_ctx())


@pytest.mark.unit
def test_registry_and_defaults():
    assert {"ga", "wga", "npo", "dpo", "rmu", "l2_mlp", "nll"} <= set(obj.OBJECTIVES)
    assert obj.make("wga").alpha == 0.1 and obj.make("npo").beta == 0.5 and obj.make("dpo").beta == 0.5
    assert obj.make("rmu").c == 2.0
    with pytest.raises(ValueError, match="unknown objective"):
        obj.make("gd")
    with pytest.raises(ValueError, match="rmu tokens"):
        obj.make("rmu", tokens="some")


@pytest.mark.unit
def test_rmu_by_hand_and_control_vector():
    u = control_vector(8, seed=3)
    assert u.norm().item() == pytest.approx(1.0) and (u >= 0).all()
    assert torch.equal(u, control_vector(8, seed=3)) and not torch.equal(u, control_vector(8, seed=4))
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]], [[3.0, 1.0], [0.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    target = torch.tensor([1.0, 1.0])
    # example 0: (0+1 + 1+1)/2 = 1.5; example 1: (4+0)/1 = 4
    assert rmu_loss(hidden, mask, target).item() == pytest.approx((1.5 + 4.0) / 2)
    assert rmu_layer(32, None) == 21 and rmu_layer(3, None) == 2
    with pytest.raises(ValueError, match="outside the model's 2 decoder layers"):
        rmu_layer(2, 2)


@pytest.mark.integration
def test_rmu_reads_layer_output_and_stops_there():
    model = make_tiny("llama", layers=3)
    batch = collate(random_examples(3), 0)
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *a: calls.append(1))
    loss = obj.make("rmu", layer=1, seed=5)(model, batch, obj.ObjectiveContext())
    handle.remove()
    assert not calls, "layers after the RMU layer should not run"
    with torch.no_grad():
        hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
    expected = rmu_loss(hs[2], batch["labels"] != -100, 2.0 * control_vector(32, 5))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.unit
def test_rmu_reachable_counts_layers_up_to_l():
    region = Region(4, 10, {0: [1, 2], 1: [3], 2: [4, 5, 6], 3: [7]})
    assert [rmu_reachable(region, l) for l in range(4)] == [2, 3, 6, 7]
    big = random_region((4, 50), 0.3, seed=0)
    counts = big.per_layer_counts()
    assert all(c > 0 for c in counts)
    assert rmu_reachable(big, 2) == sum(counts[:3])


@pytest.mark.integration
def test_rmu_moves_only_reachable_vectors():
    model = make_tiny("llama")
    region = random_region(model, 0.2, seed=0)
    delta, _ = train_region(model, region, TrainSpec(random_examples(4), TrainConfig(lr=1e-2, epochs=2, batch_size=4),
                                                     0, objective=obj.make("rmu", layer=0), progress=False))
    assert not torch.equal(delta.params["0"], delta.before(0))
    assert torch.equal(delta.params["1"], delta.before(1))


@pytest.mark.unit
def test_l2_mlp_loss_by_hand():
    out = [torch.tensor([[[1.0, 2.0], [0.0, 0.0]]]), torch.tensor([[[1.0, 1.0], [3.0, 0.0]]])]
    ref = [torch.zeros(1, 2, 2), torch.ones(1, 2, 2)]
    mask = torch.tensor([[1, 0]])
    # layer 0: ‖(1,2)‖² = 5; layer 1: ‖(0,0)‖² = 0 (the padded token is left out)
    assert l2_mlp_loss(out, ref, mask).item() == pytest.approx(5.0)


@pytest.mark.integration
def test_l2_mlp_zero_at_reference_and_retain_term():
    model = make_tiny("llama")
    ctx = obj.ObjectiveContext(reference_model=copy.deepcopy(model))
    l2 = obj.make("l2_mlp")
    forget, retain = collate(random_examples(3), 0), collate(random_examples(3, seed=1), 0)
    assert l2(model, forget, ctx).item() == 0.0
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(0.05)
    moved = l2(model, forget, ctx).item()
    assert moved > 0
    total = obj.total_loss(l2, model, forget, ctx, retain_batch=retain, lambda_retain=2.0)
    assert total.item() == pytest.approx(moved + 2.0 * l2(model, retain, ctx).item(), rel=1e-5)
    with pytest.raises(ValueError, match="reference_model"):
        l2(model, forget, obj.ObjectiveContext())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["ga", "wga", "npo", "dpo"])
def test_forget_objectives_lower_forget_likelihood(name):
    model = make_tiny("llama")
    forget = random_examples(8, seed=2)
    region = random_region(model, 0.25, seed=1)
    data = _pairs(8, seed=2) if name == "dpo" else forget
    before = _forget_logprob(model, forget)
    cfg = TrainConfig(lr=5e-2, epochs=3, batch_size=4, seed=0)
    delta, _ = train_region(model, region, TrainSpec(data, cfg, 0, objective=name,
                                                     progress=False))  # batching: the objective's own
    delta.merge()
    after = _forget_logprob(model, forget)
    assert after < before - 0.1, f"{name}: forget log-likelihood {before:.3f} -> {after:.3f}"


@pytest.mark.integration
def test_dpo_pairs_from_qa_with_seeded_refusals():
    from workbench.models import train_bpe_tokenizer

    examples = [QA(f"Who wrote book {i}?", f"Author number {i} wrote it.") for i in range(12)]
    refusals = ["I don't know.", "I have no idea.", "That is unknown to me."]
    tok = train_bpe_tokenizer([e.question + e.answer for e in examples] + refusals, vocab_size=300)
    pairs = dpo_pairs(tok, examples, refusals, seed=1)
    again = dpo_pairs(tok, examples, refusals, seed=1)
    assert pairs == again and pairs != dpo_pairs(tok, examples, refusals, seed=2)
    wins = {tok.decode(p.win.input_ids[p.win.prompt_len : -1]).strip() for p in pairs}
    assert wins <= set(refusals) and len(wins) > 1
    assert all(p.win.prompt_ids == p.lose.prompt_ids for p in pairs)
    batch = collate_pairs(pairs[:3], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 6 and batch["preferred"].tolist() == [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="refusal"):
        dpo_pairs(tok, examples, [])


@pytest.mark.integration
def test_npo_reference_stays_frozen_while_the_policy_moves():
    """π_ref is the model with its delta disabled: after k steps it still gives the logits of the
    start bit for bit, and the loss the trainer logged has moved away from its zero-margin value
    (2/β)·log 2 — a trainer that used the current policy as π_ref logs that value at every step."""
    model = make_tiny("llama")
    forget = random_examples(8, seed=2)
    batch = collate(forget, 0)
    with torch.no_grad():
        start = obj.forward_logits(model, batch).clone()
    npo = obj.make("npo", beta=0.5)
    cfg = TrainConfig(lr=5e-2, epochs=2, batch_size=4, seed=0)
    delta, history = train_region(model, random_region(model, 0.25, seed=1), TrainSpec(forget, cfg, 0, objective=npo,
                                                                                       progress=False))
    assert history[0]["loss"] == pytest.approx(4 * math.log(2), abs=1e-6)  # θ = π_ref at step 0
    assert abs(history[-1]["loss"] - 4 * math.log(2)) > 0.05  # the trainer's π_ref stayed behind
    with delta.attached(), torch.no_grad():
        with delta.disabled():
            assert torch.equal(obj.forward_logits(model, batch), start)
        moved = npo(model, batch, obj.ObjectiveContext(reference=delta.disabled)).item()
    assert abs(moved - 4 * math.log(2)) > 0.05


@pytest.mark.integration
def test_train_region_leaves_the_callers_context_alone():
    """Reusing one context for two runs must not make the second run's π_ref the first run's policy."""
    model = make_tiny("llama")
    ctx = obj.ObjectiveContext()
    cfg = TrainConfig(lr=5e-2, epochs=1, batch_size=4, seed=0)
    train_region(model, random_region(model, 0.25, seed=1), TrainSpec(random_examples(8, seed=2), cfg, 0,
                                                                      objective="npo", ctx=ctx, progress=False))
    assert ctx.reference is None
    _, history = train_region(model, random_region(model, 0.25, seed=3), TrainSpec(random_examples(8, seed=2), cfg, 0,
                                                                                   objective="npo", ctx=ctx,
                                                                                   progress=False))
    assert history[0]["loss"] == pytest.approx(4 * math.log(2), abs=1e-6)
    assert abs(history[-1]["loss"] - 4 * math.log(2)) > 1e-3  # a stale π_ref would be this run's policy
