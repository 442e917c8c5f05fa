"""The draft policy's arithmetic: step cost fitted from the steps seen, options compared at equal rows, checks
of bounded length, and only a probe of rows checked while checks do not pay."""

import pytest
import torch
from test_generation import _prompts

from workbench.decoding import Decoder
from workbench.draft_policy import DraftPolicy, _Rate, _StepCost
from workbench.generation import prefill


@pytest.mark.unit
def test_step_cost_fit_recovers_a_linear_cost():
    cost = _StepCost()
    for fed in (32, 96, 352, 32, 64):
        cost.add(fed, 0.005 + 0.0002 * fed)
    fixed, per_token = cost.fit()
    assert fixed == pytest.approx(0.005, rel=1e-6) and per_token == pytest.approx(0.0002, rel=1e-6)
    cost.discount(0.5)  # equal weights: the same line
    assert cost.fit() == pytest.approx((fixed, per_token), rel=1e-6)
    one_width = _StepCost()
    for _ in range(10):
        one_width.add(32, 0.01)
    assert one_width.fit() is None  # no slope from steps of one width


@pytest.mark.unit
def test_options_are_compared_at_equal_rows():
    """k = 0 measured while the last rows drained (4 rows of 32 slots: few tokens per second), k = 2 with a full
    batch; both keep one token per row and step. Tokens per second as measured favour guessing; at equal rows the
    guesses only cost their extra tokens, so plain decoding is chosen."""
    policy = DraftPolicy(explore=10**9)
    for _ in range(20):
        policy.observe(0, rows=4, slots=32, produced=4, fed=32, seconds=0.005 + 0.0002 * 32)
        policy.observe(2, rows=32, slots=32, produced=32, fed=96, seconds=0.005 + 0.0002 * 96)
    assert policy.guesses[2].value() > policy.guesses[0].value()  # the confounded measure
    assert policy.guess() == 0
    assert policy.rate(0, (32, 32)) == pytest.approx(32 / (0.005 + 0.0002 * 32))
    # Guesses that keep enough tokens win.
    for _ in range(200):
        policy.observe(2, rows=32, slots=32, produced=96, fed=96, seconds=0.005 + 0.0002 * 96)
    assert policy.guess() == 2


@pytest.mark.unit
def test_checked_draft_length_follows_what_rows_kept():
    policy = DraftPolicy()
    assert policy.draft_length() is None  # nothing measured: whole drafts
    policy.kept.add(30, 2)
    assert policy.draft_length() == 30  # twice the 15 tokens kept per row
    policy.kept.add(0, 100)
    assert policy.draft_length() == 8  # the floor
    assert DraftPolicy(adaptive=False).draft_length() is None


@pytest.mark.unit
def test_only_a_probe_of_rows_is_checked_while_checks_do_not_pay():
    model, ids, mask = _prompts(n=6, seed=5)
    prefix = prefill(model, ids, mask)
    drafts = [[7] * 12 for _ in range(6)]
    truth = Decoder(model, [1], 20, slots=6, policy=DraftPolicy(lookahead=0, adaptive=False))
    truth.add(range(6), prefix)
    truth.run(finish=True)
    policy = DraftPolicy(lookahead=0, explore=1)  # explores (checks) at every admission
    policy.checks, policy.guesses[0] = _Rate(1.0, 100.0), _Rate(1000.0, 1.0)  # checks far slower than decoding
    decoder = Decoder(model, [1], 20, slots=6, policy=policy)
    decoder.add(range(6), prefix, drafts)
    decoder.run(finish=True)
    assert [decoder.tokens[r] for r in range(6)] == [truth.tokens[r] for r in range(6)]
    assert 0 < decoder.draft_tokens <= Decoder.probe * 12
    paying = Decoder(model, [1], 20, slots=6, policy=DraftPolicy(lookahead=0))
    paying.add(range(6), prefix, drafts)
    paying.run(finish=True)
    assert paying.draft_tokens == 6 * 12  # untried checks are tried on every row


@pytest.mark.unit
def test_a_step_leaves_no_column_that_no_row_kept():
    """One row with a wrong draft, guessing 5 tokens a step: the cache grows by the tokens the step kept, not by
    the tokens it fed (rejected guesses are overwritten by the next step)."""
    model, ids, mask = _prompts(n=1, seed=6)
    prefix = prefill(model, ids, mask)
    truth = Decoder(model, [1], 30, slots=1, policy=DraftPolicy(lookahead=0, adaptive=False))
    truth.add([0], prefix)
    truth.run(finish=True)
    wrong = [[(t + 1) % 64 for t in truth.tokens[0]]]
    decoder = Decoder(model, [1], 30, slots=1, policy=DraftPolicy(lookahead=5, adaptive=False))
    decoder.add([0], prefix, wrong)
    growth, step = [], decoder._step

    def recording():
        width, made = decoder.state.width, len(decoder.tokens[0])
        step()
        growth.append((decoder.state.width - width, len(decoder.tokens[0]) - made))

    decoder._step = recording
    decoder.run(finish=True)
    assert decoder.tokens[0] == truth.tokens[0]
    assert growth and all(columns == made for columns, made in growth), growth


@pytest.mark.unit
def test_slots_take_only_a_ready_rows_attended_columns():
    """A row admitted with left padding and rejected draft columns occupies only its attended columns."""
    from workbench.slots import Ready, Slots

    gen = torch.Generator().manual_seed(7)
    keys = torch.randn(2, 2, 9, 4, generator=gen)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0, 0, 1], [1, 1, 1, 1, 1, 0, 0, 0, 0]])
    ready = Ready([10, 11], [(keys, keys + 1)], mask, torch.tensor([5, 5]), torch.tensor([3, 4]), [0, 1])
    slots = Slots([(keys, keys)], 3, 20)
    slots.put([2, 0], ready)
    assert slots.width == 5 and slots.rows == [11, None, 10]
    for slot, row in ((2, 0), (0, 1)):
        want = keys[row][:, mask[row].bool()]
        got_mask = slots.mask[slot, : slots.width].bool()
        assert torch.equal(slots.layers[0][0][slot][:, : slots.width][:, got_mask], want)
        assert torch.equal(slots.layers[0][1][slot][:, : slots.width][:, got_mask], want + 1)
