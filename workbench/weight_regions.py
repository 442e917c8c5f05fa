"""Weight-level regions (WAGLE, paper Table 5): single down-projection weights, at 8B scale.

A :class:`WeightRegion` is, per layer, a boolean mask over the entries of the down-projection
weight, in the weight's own layout. The paper's Table 5 keeps the top 80% of all down-projection
weights: at Llama-3.1-8B that is 32 × 4096 × 14,336 ≈ 1.9 billion entries, 1.5 billion selected.
Three things follow, and this module is built around them:

* **Storage in bits.** A region is stored as packed bits (one bit per entry, ``numpy.packbits``)
  in safetensors tensors, 235 MB at 8B; the safetensors header holds only the layer shapes. A list
  of selected indices in JSON would take ~20 bytes per entry (gigabytes, and over safetensors'
  100 MB header limit already at SmolLM2-135M's 26.5 M entries).
* **Identity by content.** :meth:`WeightRegion.fingerprint` hashes the shapes and the packed bits;
  cache keys use it, never the region itself.
* **Selection without sorting.** Ranking 1.9 B scores with ``torch.sort`` would materialise the
  sorted values and int64 indices (≈ 23 GB on the GPU). :func:`top_fraction_weights` instead finds
  the k-th largest score by bisection over the scores' 32-bit patterns (each step one counting
  pass per layer, 32 steps give the exact threshold), keeps everything above it and breaks ties by
  flat index, exactly as a stable descending sort would. Masks are returned on the CPU.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.models import architectures as arch

KIND = "weights"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as ``uint8`` packed bits (row-major, little bit order), on the CPU."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1), bitorder="little"))


def unpack_bits(bits: torch.Tensor, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    n = int(np.prod(shape))
    flat = np.unpackbits(bits.cpu().numpy(), count=n, bitorder="little").astype(bool)
    return torch.from_numpy(flat).view(*shape)


@dataclass(frozen=True)
class WeightRegion:
    """Weight-level region: per layer a boolean mask over the down-projection weight's entries.

    Masks are in the weight's own layout (``down_proj.weight.shape``) and live on the CPU
    (:class:`~workbench.delta.RegionDelta` moves its own copy to the weights' device).
    """

    masks: Mapping[int, torch.Tensor]

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", {int(l): m.to("cpu", torch.bool) for l, m in sorted(self.masks.items())})

    @property
    def size(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    @property
    def total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def fraction(self) -> float:
        return self.size / self.total

    def per_layer_counts(self) -> list[int]:
        return [int(m.sum()) for m in self.masks.values()]

    def shapes(self) -> dict[str, list[int]]:
        return {str(l): list(m.shape) for l, m in self.masks.items()}

    # -- storage: packed bits in tensors, shapes in a small header ---------------------------------
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """``({"<layer>": packed bits}, safetensors metadata)``; the metadata holds shapes only."""
        tensors = {str(l): pack_bits(m) for l, m in self.masks.items()}
        return tensors, {"region": json.dumps({"kind": KIND, "shapes": self.shapes()})}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], header: Mapping) -> WeightRegion:
        if header.get("kind") != KIND:
            raise ValueError(f"not a weight-level region (kind={header.get('kind')!r})")
        shapes = header["shapes"]
        masks = {int(l): unpack_bits(tensors[l], s) if l in tensors else torch.zeros(s, dtype=torch.bool)
                 for l, s in shapes.items()}
        return cls(masks)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors, metadata = self.to_tensors()
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> WeightRegion:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = json.loads(f.metadata()["region"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors file, not a dict)
        return cls.from_tensors(tensors, header)

    def fingerprint(self) -> str:
        """sha256 of the shapes and the packed bits: the region's identity in cache keys."""
        digest = hashlib.sha256(json.dumps(self.shapes(), sort_keys=True).encode())
        for m in self.masks.values():
            digest.update(pack_bits(m).numpy().tobytes())
        return digest.hexdigest()

    def to_json(self) -> str:
        """Compact JSON: shapes and base64 packed bits (bits/6 bytes; for small models and humans)."""
        tensors, _ = self.to_tensors()
        bits = {l: base64.b64encode(t.numpy().tobytes()).decode("ascii") for l, t in tensors.items()}
        return json.dumps({"kind": KIND, "shapes": self.shapes(), "bits": bits})

    @classmethod
    def from_json(cls, text: str) -> WeightRegion:
        data = json.loads(text)
        tensors = {l: torch.frombuffer(bytearray(base64.b64decode(b)), dtype=torch.uint8)
                   for l, b in data.get("bits", {}).items()}
        return cls.from_tensors(tensors, data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightRegion):
            return NotImplemented
        return self.masks.keys() == other.masks.keys() and all(
            torch.equal(self.masks[l], other.masks[l]) for l in self.masks
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WeightRegion({self.size} of {self.total} weights = {self.fraction:.2%})"


def weight_shapes(model: nn.Module) -> dict[int, torch.Size]:
    return {l: arch.down_proj(model, l).weight.shape for l in range(arch.n_layers(model))}


def random_weight_region(model: nn.Module, fraction: float, seed: int) -> WeightRegion:
    """Draw ``fraction`` of all down-projection entries uniformly over the model (seeded, on the CPU).

    A uniform k-subset of all entries, drawn one layer at a time: first how many fall in each layer
    (multivariate hypergeometric, the counts a uniform subset has), then which, by a permutation of
    that layer alone. Permuting all entries at once would take 8 bytes per entry (15 GB at 8B).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"region fraction must be in (0, 1), got {fraction}")
    shapes = weight_shapes(model)
    sizes = [s.numel() for s in shapes.values()]
    counts = np.random.default_rng(int(seed)).multivariate_hypergeometric(sizes, round(fraction * sum(sizes)))
    gen = torch.Generator().manual_seed(int(seed))
    masks = {}
    for (layer, shape), size, count in zip(shapes.items(), sizes, counts.tolist()):
        mask = torch.zeros(size, dtype=torch.bool)
        mask[torch.randperm(size, generator=gen)[:count]] = True
        masks[layer] = mask.view(shape)
    return WeightRegion(masks)


# -- top-k by threshold --------------------------------------------------------------------------------
def _ordered_keys(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys that order like the float32 scores (IEEE 754: flip the magnitude bits of negatives;
    -0.0 and +0.0 get one key, as they compare equal)."""
    bits = (scores.detach().float() + 0.0).contiguous().view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


def _count_at_least(scores: list[torch.Tensor], key: int) -> int:
    return sum(int((_ordered_keys(s) >= key).sum()) for s in scores)


def kth_largest_key(scores: list[torch.Tensor], k: int) -> int:
    """The key of the k-th largest score over all tensors: the largest ``t`` with ``#{key ≥ t} ≥ k``.

    Bisection over the 2³² keys; each step is one counting pass (no sort, no index tensor).
    """
    lo, hi = -(2**31), 2**31  # #{key >= lo} = all >= k; #{key >= hi} = 0 < k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _count_at_least(scores, mid) >= k else (lo, mid)
    return lo


def top_fraction_weights(scores: Mapping[int, torch.Tensor], fraction: float) -> WeightRegion:
    """Weight-level region of the top ``fraction`` of per-entry scores, ranked over all layers.

    Equals a stable descending sort of all scores concatenated in layer order (ties go to the lower
    flat index), computed on the scores' device with per-layer passes; masks come back on the CPU.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"region fraction must be in (0, 1], got {fraction}")
    layers = sorted(scores)
    values = [scores[l] for l in layers]
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise ValueError("weight scores contain NaN or inf; cannot rank weights")
    k = round(fraction * sum(v.numel() for v in values))
    if k == 0:
        return WeightRegion({l: torch.zeros(v.shape, dtype=torch.bool) for l, v in zip(layers, values)})
    threshold = kth_largest_key(values, k)
    masks = [_ordered_keys(v) > threshold for v in values]
    ties = k - sum(int(m.sum()) for m in masks)
    for mask, v in zip(masks, values):  # the remaining places go to tied entries in flat order
        if ties <= 0:
            break
        at = (_ordered_keys(v) == threshold).flatten().nonzero().flatten()[:ties]
        mask.view(-1)[at] = True
        ties -= at.numel()
    return WeightRegion({l: m.cpu() for l, m in zip(layers, masks)})
