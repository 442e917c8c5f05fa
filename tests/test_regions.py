import pytest
import torch
from conftest import make_tiny
from scipy import stats

from workbench.regions import (
    Region,
    WeightRegion,
    random_region,
    random_weight_region,
    top_fraction,
    top_fraction_weights,
)

pytestmark = pytest.mark.unit


def test_random_region_exact_size_and_seeded():
    r1 = random_region((4, 100), 0.1, seed=7)
    r2 = random_region((4, 100), 0.1, seed=7)
    r3 = random_region((4, 100), 0.1, seed=8)
    assert r1.size == 40 and r1.fraction == pytest.approx(0.1)
    assert r1 == r2 and r1 != r3


def test_random_region_exclude_is_disjoint():
    tgt = random_region((3, 50), 0.1, seed=1)
    rdm = random_region((3, 50), 0.1, seed=2, exclude=tgt)
    assert rdm.size == tgt.size
    assert rdm.overlap(tgt) == 0
    with pytest.raises(ValueError, match="2p <= 1"):
        random_region((3, 50), 0.6, seed=2, exclude=random_region((3, 50), 0.5, seed=1))


def test_random_region_spreads_uniformly_over_layers():
    region = random_region((8, 1000), 0.1, seed=0)
    counts = region.per_layer_counts()
    # Global draw: per-layer counts follow a multinomial, not fixed quotas.
    _, p = stats.chisquare(counts)
    assert p > 0.01
    assert len(set(counts)) > 1


def test_region_set_operations_and_json():
    a = Region(2, 10, {0: [1, 2, 3], 1: [5]})
    b = Region(2, 10, {0: [3, 4], 1: [5, 9]})
    assert a.union(b).size == 6
    assert a.difference(b) == Region(2, 10, {0: [1, 2]})
    assert a.overlap(b) == 2
    assert a.jaccard(b) == pytest.approx(2 / 6)
    assert Region.from_json(a.to_json()) == a
    assert a.per_layer_counts() == [3, 1]
    with pytest.raises(ValueError, match="outside"):
        Region(2, 10, {0: [10]})


def test_top_fraction_ranks_globally():
    scores = torch.tensor([[0.0, 5.0, 1.0, 0.5], [4.0, 0.1, 3.0, 0.2]])
    region = top_fraction(scores, 0.5)
    assert region == Region(2, 4, {0: [1, 2], 1: [0, 2]})


def test_weight_regions():
    model = make_tiny("llama")
    w = random_weight_region(model, 0.2, seed=0)
    assert w.size == round(0.2 * w.total)
    assert WeightRegion.from_json(w.to_json()) == w
    scores = {0: torch.arange(6.0).view(2, 3), 1: -torch.arange(6.0).view(2, 3)}
    top = top_fraction_weights(scores, 0.25)
    assert top.size == 3 and top.masks[0].flatten().tolist() == [False, False, False, True, True, True]
