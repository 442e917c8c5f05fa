"""Pure metric functions against values computed another way (by hand, scipy, a plain loop)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import hmean, ks_2samp

from workbench import metrics as m

pytestmark = pytest.mark.unit

IGNORE = -100


def _logits_predicting(pred_next: list[int], vocab: int = 10) -> torch.Tensor:
    """Logits ``[1, pos, vocab]`` whose argmax at position t is ``pred_next[t]``."""
    logits = torch.zeros(1, len(pred_next), vocab)
    logits[0, torch.arange(len(pred_next)), torch.tensor(pred_next)] = 5.0
    return logits


def _labels(prompt: int, answer: list[int], pad: int = 0) -> torch.Tensor:
    return torch.tensor([[IGNORE] * prompt + answer + [IGNORE] * pad])


def _open_unlearning_es(pred: list[int], y: list[int]) -> float:
    """open-unlearning's loop, ported plainly (its floor of 1/|y| included)."""
    for k in range(len(y)):
        if pred[k:] == y[k:]:
            break
    return 1 - k / len(y)


# answer y = [3, 4, 5, 6] then EOS 9; prompt of 2 tokens. pred_next[t] predicts token t+1.
@pytest.mark.parametrize(
    "answer_preds, expected",
    [
        ([3, 4, 5, 6, 9], 1.0),  # all right: ES = 1
        ([3, 4, 5, 6, 1], 1.0),  # a wrong EOS prediction does not count
        ([3, 7, 5, 6, 9], 0.5),  # last mistake at answer position 1 → k* = 2
        ([3, 4, 5, 1, 9], 0.0),  # the last answer token is wrong → k* = |y|
        ([1, 1, 1, 1, 1], 0.0),
    ],
)
def test_extraction_strength_cases(answer_preds, expected):
    y = [3, 4, 5, 6]
    labels = _labels(2, y + [9], pad=2)
    # position 1 (the last prompt token) predicts answer token 0
    pred_next = [0, *answer_preds, 0, 0, 0]
    es = m.extraction_strength(_logits_predicting(pred_next), labels)
    assert es.shape == (1,) and es.item() == pytest.approx(expected)
    floored = m.extraction_strength(_logits_predicting(pred_next), labels, floor=True).item()
    assert floored == pytest.approx(max(expected, 1 / len(y)))
    assert floored == pytest.approx(_open_unlearning_es(answer_preds[:4], y))


def test_extraction_strength_batched_rows_of_different_lengths():
    rows = [(1, [3, 4, 9], [3, 4, 9]), (3, [5, 6, 7, 8, 9], [5, 1, 7, 8, 9])]
    width = 9
    labels = torch.full((2, width), IGNORE)
    logits = torch.zeros(2, width, 10)
    for r, (p, y, preds) in enumerate(rows):
        labels[r, p : p + len(y)] = torch.tensor(y)
        for j, t in enumerate(preds):
            logits[r, p - 1 + j, t] = 5.0
    es = m.extraction_strength(logits, labels)
    assert es.tolist() == pytest.approx([1.0, 1 - 2 / 4])


def test_answer_nll_matches_cross_entropy_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    labels = _labels(2, [3, 1, 4])
    logp = torch.log_softmax(logits[0], -1)
    by_hand = -(logp[1, 3] + logp[2, 1] + logp[3, 4]) / 3
    assert m.answer_nll(logits, labels).item() == pytest.approx(by_hand.item(), rel=1e-6)


# Three examples: mean NLL of the answer, the paraphrase and two perturbed answers.
ANS = torch.tensor([0.5, 1.0, 2.0])
PARA = torch.tensor([0.7, 1.2, 0.1])
PERT = torch.tensor([[1.0, 3.0], [0.2, 0.4], [2.0, 2.0]])


def test_probability_and_truth_ratio_by_hand():
    assert m.probability(ANS).tolist() == pytest.approx([math.exp(-0.5), math.exp(-1.0), math.exp(-2.0)])
    expected = []
    for para, (a, b) in zip(PARA.tolist(), PERT.tolist()):
        p_pert = math.sqrt(math.exp(-a) * math.exp(-b))  # geometric mean
        expected.append(p_pert / math.exp(-para))
    assert m.truth_ratio(PARA, PERT).tolist() == pytest.approx(expected, rel=1e-6)
    tr = np.array(expected)
    assert m.truth_ratio_score(tr) == pytest.approx(np.mean([max(0, 1 - t) for t in tr]))
    assert m.truth_ratio_closeness(tr) == pytest.approx(np.mean([min(t, 1 / t) for t in tr]))


def test_normalised_probability_by_hand():
    expected = []
    for a, (p1, p2) in zip(ANS.tolist(), PERT.tolist()):
        pa = math.exp(-a)
        expected.append(pa / (pa + math.exp(-p1) + math.exp(-p2)))
    assert m.normalised_probability(ANS, PERT).tolist() == pytest.approx(expected, rel=1e-6)


def test_rouge_l_recall_by_hand():
    # LCS(the cat sat on the mat, the cat is on a mat) = the cat on mat: 4 of 6 target words.
    assert m.rouge_l_recall("the cat is on a mat", "the cat sat on the mat") == pytest.approx(4 / 6)
    # Stemming: "running dogs" → run dog; "the dog runs" → the dog run; LCS 1 of 2.
    assert m.rouge_l_recall("the dog runs", "running dogs") == pytest.approx(1 / 2)
    assert m.rouge_l_recall("Paris, in France.", "paris in france") == pytest.approx(1.0)


def test_forget_quality_is_log10_ks_pvalue():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 50)
    assert m.forget_quality(a, b) == pytest.approx(math.log10(ks_2samp(a, b).pvalue))
    assert m.forget_quality(a, a) == pytest.approx(0.0)


def test_model_utility_harmonic_mean_and_zero():
    values = {"a": 0.2, "b": 0.5, "c": 0.9}
    assert m.model_utility(values) == pytest.approx(hmean(list(values.values())))
    assert m.model_utility({**values, "d": 0.0}) == 0.0
    assert math.isnan(m.model_utility({**values, "d": math.nan}))
