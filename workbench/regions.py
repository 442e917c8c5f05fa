"""Regions: the sets of parameters that localized unlearning is allowed to change.

A :class:`Region` is a set of MLP value vectors ``(layer, i)`` (SPEC §2): per layer a sorted
``LongTensor`` of indices into ``0 … d_ff-1``. Lee et al. (2025) compare regions chosen by a
localizer (top-p% of scores, ranked globally across layers) with *Random* regions of the same
size, drawn uniformly over all ``L·d_ff`` vectors of the model (not per layer). In the controlled
setting a random region ``V_tgt`` receives the forget knowledge and ``V_rdm`` is drawn from the
vectors *outside* it (``exclude=``).

A :class:`~workbench.weight_regions.WeightRegion` is the weight-level variant (WAGLE, paper
Table 5): a boolean mask over the entries of every layer's down-projection weight, in the weight's
own layout (its own module: packed-bit storage and selection at 8B scale).

Both have a size, a fraction, per-layer counts, a content fingerprint (their identity in cache
keys) and a serial form. Index tensors live on the CPU whatever device the scores came from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.models import architectures as arch


def _as_index(values) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.long).flatten()
    return torch.unique(t, sorted=True)


@dataclass(frozen=True)
class Region:
    """A set of value vectors.

    Attributes:
        n_layers: number of decoder layers of the model the region belongs to.
        d_ff: number of value vectors per layer.
        indices: ``{layer: LongTensor[k_layer]}``, sorted and unique; layers with no vector may be absent.
    """

    n_layers: int
    d_ff: int
    indices: Mapping[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {}
        for layer, idx in self.indices.items():
            layer = int(layer)
            if not 0 <= layer < self.n_layers:
                raise ValueError(f"region layer {layer} outside 0..{self.n_layers - 1}")
            idx = _as_index(idx)
            if idx.numel() and (idx[0] < 0 or idx[-1] >= self.d_ff):
                raise ValueError(f"region index outside 0..{self.d_ff - 1} in layer {layer}")
            if idx.numel():
                clean[layer] = idx
        object.__setattr__(self, "indices", dict(sorted(clean.items())))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, n_layers: int, d_ff: int) -> Region:
        return cls(n_layers, d_ff, {})

    @classmethod
    def for_model(cls, model: nn.Module, indices: Mapping[int, torch.Tensor] | None = None) -> Region:
        return cls(arch.n_layers(model), arch.d_ff(model), indices or {})

    @classmethod
    def from_flat(cls, flat: torch.Tensor, n_layers: int, d_ff: int) -> Region:
        """Build from global indices ``layer * d_ff + i``."""
        flat = _as_index(flat)
        layers, idx = flat // d_ff, flat % d_ff
        return cls(n_layers, d_ff, {int(l): idx[layers == l] for l in torch.unique(layers)})

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> Region:
        """Build from a boolean ``[layer, d_ff]`` membership mask."""
        return cls.from_flat(mask.flatten().nonzero().flatten(), mask.shape[0], mask.shape[1])

    # -- views ----------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Number of value vectors in the whole model (``L·d_ff``)."""
        return self.n_layers * self.d_ff

    @property
    def size(self) -> int:
        return sum(int(v.numel()) for v in self.indices.values())

    @property
    def fraction(self) -> float:
        return self.size / self.total

    def layer(self, layer: int) -> torch.Tensor:
        return self.indices.get(layer, torch.empty(0, dtype=torch.long))

    def per_layer_counts(self) -> list[int]:
        return [int(self.layer(l).numel()) for l in range(self.n_layers)]

    def flat(self) -> torch.Tensor:
        """Global indices ``layer * d_ff + i``, sorted."""
        parts = [idx + l * self.d_ff for l, idx in self.indices.items()]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    def mask(self) -> torch.Tensor:
        """Boolean ``[layer, d_ff]`` membership mask."""
        m = torch.zeros(self.total, dtype=torch.bool)
        m[self.flat()] = True
        return m.view(self.n_layers, self.d_ff)

    # -- set operations -------------------------------------------------------------------------
    def _check_compatible(self, other: Region) -> None:
        if (self.n_layers, self.d_ff) != (other.n_layers, other.d_ff):
            raise ValueError(
                f"regions of different models: {self.n_layers}x{self.d_ff} vs {other.n_layers}x{other.d_ff}"
            )

    def union(self, other: Region) -> Region:
        self._check_compatible(other)
        return Region.from_mask(self.mask() | other.mask())

    def difference(self, other: Region) -> Region:
        self._check_compatible(other)
        return Region.from_mask(self.mask() & ~other.mask())

    def intersection(self, other: Region) -> Region:
        self._check_compatible(other)
        return Region.from_mask(self.mask() & other.mask())

    def overlap(self, other: Region) -> int:
        return self.intersection(other).size

    def jaccard(self, other: Region) -> float:
        union = self.union(other).size
        return self.overlap(other) / union if union else 1.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Region):
            return NotImplemented
        return (self.n_layers, self.d_ff) == (other.n_layers, other.d_ff) and torch.equal(
            self.flat(), other.flat()
        )

    def __hash__(self) -> int:
        return hash((self.n_layers, self.d_ff, tuple(self.flat().tolist())))

    def __repr__(self) -> str:
        return f"Region({self.size} of {self.total} value vectors = {self.fraction:.2%}, per layer {self.per_layer_counts()})"

    # -- serialisation --------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 of the JSON form: the region's identity in cache keys."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": "value_vectors",
                "n_layers": self.n_layers,
                "d_ff": self.d_ff,
                "indices": {str(l): idx.tolist() for l, idx in self.indices.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Region:
        data = json.loads(text)
        if data.get("kind") != "value_vectors":
            raise ValueError(f"not a value-vector region JSON (kind={data.get('kind')!r})")
        return cls(data["n_layers"], data["d_ff"], {int(l): v for l, v in data["indices"].items()})


def random_region(
    model_or_shape: nn.Module | tuple[int, int],
    fraction: float,
    seed: int,
    exclude: Region | None = None,
) -> Region:
    """Draw ``round(fraction · L·d_ff)`` value vectors uniformly over the whole model.

    The draw is global (layers get counts proportional to chance, not fixed quotas) and seeded
    with its own ``torch.Generator``, so it never touches the global RNG. With ``exclude`` the
    vectors are drawn from outside that region (``V_rdm`` of the controlled setting); the size is
    still a fraction of *all* vectors.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"region fraction must be in (0, 1), got {fraction}")
    n_layers, d_ff = (
        model_or_shape if isinstance(model_or_shape, tuple) else (arch.n_layers(model_or_shape), arch.d_ff(model_or_shape))
    )
    total = n_layers * d_ff
    k = round(fraction * total)
    candidates = torch.arange(total)
    if exclude is not None:
        candidates = candidates[~exclude.mask().flatten()]
    if k > candidates.numel():
        raise ValueError(
            f"cannot draw {k} value vectors ({fraction:.1%}) from the {candidates.numel()} outside the excluded "
            f"region: lower the fraction (two disjoint regions need 2p <= 1)"
        )
    gen = torch.Generator().manual_seed(int(seed))
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:k]]
    return Region.from_flat(chosen, n_layers, d_ff)


def top_fraction(scores: torch.Tensor, fraction: float) -> Region:
    """Region of the top ``fraction`` of a ``[layer, d_ff]`` score matrix, ranked globally.

    Ties are broken by index (stable), so the result is deterministic.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"region fraction must be in (0, 1], got {fraction}")
    flat = scores.detach().float().cpu().flatten()  # [layer, d_ff] is small; indices belong on the CPU
    if not torch.isfinite(flat).all():
        raise ValueError("localizer scores contain NaN or inf; cannot rank value vectors")
    k = round(fraction * flat.numel())
    order = torch.sort(-flat, stable=True).indices[:k]
    return Region.from_flat(order, scores.shape[0], scores.shape[1])


# Weight-level regions have their own module (packed-bit storage, top-k by threshold at 8B scale).
from workbench.weight_regions import (  # noqa: E402,F401
    WeightRegion,
    random_weight_region,
    top_fraction_weights,
    weight_shapes,
)
