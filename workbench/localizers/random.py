"""``random`` — the baseline: uniform scores from a seeded generator (the data are ignored).

The paper's question is whether a localizer's region beats a Random region of the same size; the
experiments draw their Random regions with :func:`workbench.regions.random_region` (global,
seeded, optionally outside another region) and label them with this localizer's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from workbench.localizers.base import Localizer, register
from workbench.models import architectures as arch


def random_scores(model, seed: int = 0) -> torch.Tensor:
    """Uniform ``[layer, d_ff]`` scores from a seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(arch.n_layers(model), arch.d_ff(model), generator=gen)


@register
@dataclass
class RandomLocalizer(Localizer):
    """Uniform scores; the top p% is a uniformly random region."""

    name: ClassVar[str] = "random"
    title: ClassVar[str] = "Random"
    color: ClassVar[str] = "#6E6E6E"
    seed: int = 0

    def scores(self, model, forget, retain, pad_token_id):
        return random_scores(model, self.seed)
