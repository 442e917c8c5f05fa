"""Weight-level regions at scale: packed-bit storage, content-hash cache keys, top-k without a sort."""

import json
import struct

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench.delta import RegionDelta
from workbench.models import smollm
from workbench.regions import WeightRegion, random_weight_region, top_fraction_weights
from workbench.runs.cache import Cache, cache_key
from workbench.training import TrainConfig, TrainSpec, train_region


def _sorted_top(scores: dict[int, torch.Tensor], fraction: float) -> torch.Tensor:
    """The definition: a stable descending sort of all scores in layer order."""
    flat = torch.cat([scores[l].flatten() for l in sorted(scores)])
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[torch.sort(-flat, stable=True).indices[: round(fraction * flat.numel())]] = True
    return mask


@pytest.mark.unit
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.8, 1.0])
def test_threshold_selection_equals_a_stable_sort_with_ties(fraction):
    gen = torch.Generator().manual_seed(int(fraction * 100))
    for sign in (1, -1):  # negative scores exercise the sign handling of the bit-pattern keys
        scores = {l: sign * torch.randn(4, 6, generator=gen).round(decimals=1) for l in range(3)}
        scores[1][0, :3] = torch.tensor([0.0, -0.0, 0.0])  # -0.0 ties with +0.0, as in a sort
        region = top_fraction_weights(scores, fraction)
        got = torch.cat([region.masks[l].flatten() for l in range(3)])
        assert torch.equal(got, _sorted_top(scores, fraction))
        assert all(m.device.type == "cpu" for m in region.masks.values())


@pytest.mark.unit
def test_json_and_file_forms_round_trip_without_index_lists(tmp_path):
    region = random_weight_region(make_tiny("llama"), 0.3, seed=1)
    assert WeightRegion.from_json(region.to_json()) == region
    assert '"flat"' not in region.to_json()
    region.save(tmp_path / "r.safetensors")
    assert WeightRegion.load(tmp_path / "r.safetensors") == region
    flipped = {l: m.clone() for l, m in region.masks.items()}
    flipped[0].view(-1)[0] ^= True
    assert WeightRegion(flipped).fingerprint() != region.fingerprint()


@pytest.mark.unit
def test_random_weight_region_is_a_uniform_subset_drawn_one_layer_at_a_time(monkeypatch):
    model = make_tiny("llama", d_model=8, d_ff=16, layers=3)  # three layers of 128 entries
    sizes, drawn = [128] * 3, []
    real = torch.randperm

    def recording_randperm(n, *args, **kwargs):
        drawn.append(n)
        return real(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", recording_randperm)
    draws = 2000
    hits = torch.zeros(sum(sizes))
    first_layer = []
    for seed in range(draws):
        region = random_weight_region(model, 0.25, seed)
        assert region.size == 96
        hits += torch.cat([m.flatten() for m in region.masks.values()]).float()
        first_layer.append(int(region.masks[0].sum()))
    assert max(drawn) == 128  # no permutation over more than one layer's entries
    # Every entry is chosen with probability k / N (binomial spread over 2000 draws: σ ≈ 0.0097).
    assert (hits / draws - 0.25).abs().max() < 0.05
    # A layer's count is hypergeometric: variance n·(K/N)·(1 − K/N)·(N − n)/(N − 1) = 16.04; a fixed
    # proportional split gives 0 and independent per-layer binomials 24.
    expected = 128 * 0.25 * 0.75 * (384 - 128) / (384 - 1)
    assert abs(torch.tensor(first_layer, dtype=torch.float64).var().item() / expected - 1) < 0.15
    assert random_weight_region(model, 0.25, 5) == random_weight_region(model, 0.25, 5)


@pytest.mark.integration
def test_weight_level_delta_saves_bits_and_loads_back(tmp_path):
    model = make_tiny("llama")
    region = random_weight_region(model, 0.5, seed=2)
    delta, _ = train_region(model, region, TrainSpec(random_examples(8), TrainConfig(lr=1e-2, epochs=1, batch_size=4),
                                                     0, progress=False))
    delta.save(tmp_path / "d.safetensors")
    loaded = RegionDelta.load(model, tmp_path / "d.safetensors")
    assert loaded.region == region
    for layer in delta.layers:
        assert torch.equal(loaded.params[str(layer)], delta.params[str(layer)])
        assert delta.state_tensors()[f"{layer}.selector"].dtype == torch.uint8  # packed bits, not a bool mask


def _header_bytes(path) -> int:
    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


@pytest.mark.integration
def test_eighty_percent_of_smollm2_down_projections_save_load_and_key_the_cache(tmp_path):
    """Paper Table 5's region at SmolLM2-135M-Instruct's size: 30 layers × [576, 1536] = 26.5 M weights."""
    facts = smollm.EXPECTED
    shape = (facts["hidden_size"], facts["intermediate_size"])  # down_proj.weight: [d_model, d_ff]
    gen = torch.Generator().manual_seed(0)
    scores = {l: torch.rand(shape, generator=gen) for l in range(facts["num_hidden_layers"])}
    region = top_fraction_weights(scores, 0.8)
    assert region.size == round(0.8 * region.total)

    cache, builds = Cache(tmp_path / "cache"), []
    inputs = {"region": region.fingerprint()}

    def get():
        return cache.get_or_build("weight_region", inputs, lambda: builds.append(1) or region,
                                  lambda r, folder: r.save(folder / "region.safetensors"),
                                  lambda folder: WeightRegion.load(folder / "region.safetensors"))

    assert get() == region and get() == region and len(builds) == 1  # built once, then served
    folder = cache.entry_path("weight_region", cache_key("weight_region", inputs))
    path = folder / "region.safetensors"
    size, header, bits = path.stat().st_size, _header_bytes(path), region.total
    entry = len((folder / "entry.json").read_text())
    print(f"\n80% weight region over SmolLM2-135M down-projections: {bits:,} bits = {bits / 8 / 2**20:.2f} MiB packed; "
          f"file {size / 2**20:.2f} MiB, safetensors header {header:,} bytes, cache entry.json {entry:,} bytes")
    assert header < 2**20 and entry < 10_000
    assert bits / 8 <= size <= bits / 8 * 1.01 + 2**16
    assert json.loads((folder / "entry.json").read_text())["inputs"] == {"region": region.fingerprint()}
