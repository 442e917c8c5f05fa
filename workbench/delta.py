"""Region deltas: train, store and mix only a region's value vectors.

Restricted training (SPEC §2) must change exactly the region's entries and nothing else, and its
optimizer state and gradients must scale with the region, not with the down-projection matrices.
A gradient mask on the full weight fails both: it allocates full-size gradients and Adam moments,
and decoupled weight decay still moves the masked-out columns.

:class:`RegionDelta` instead holds, per layer, a dense fp32 parameter ``P_ℓ`` of shape
``[k_ℓ, d_model]`` (the region's value vectors; for a weight-level region a flat vector of the
selected entries) and a frozen copy ``P0_ℓ`` of their original values. While attached, a forward
hook on each down-projection adds ``a[..., I_ℓ] @ (P_ℓ − P0_ℓ)`` to its output, which is exactly
the output of the down-projection whose region entries are replaced by ``P_ℓ``; the model's own
weights never change and need no gradient. Because ``P_ℓ`` *is* the region's weight (not an offset),
any optimizer and its weight decay act on it exactly as dense masked training acts on the region
entries. The parameters stay in fp32 when the model runs in bf16, so small updates are not rounded away.

The same object gives the two other things the workbench needs:

* the frozen reference ``π_ref`` of the unlearning objectives: the model with the delta disabled
  (:meth:`RegionDelta.disabled`), no second copy of the model;
* model mixing ``θ(α) = (1−α)·θ_before + α·θ_after`` in place: :meth:`RegionDelta.merge` writes
  ``P0 + α·(P − P0)`` into the region entries and :meth:`RegionDelta.restore` writes ``P0`` back
  bit for bit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from workbench.models import architectures as arch
from workbench.regions import Region, WeightRegion
from workbench.weight_regions import pack_bits


class RegionDelta(nn.Module):
    """Trainable fp32 copy of a region's entries, applied to a frozen model by forward hooks.

    Shapes: for a :class:`Region`, ``params[str(ℓ)]`` is ``[k_ℓ, d_model]`` (row j = value vector
    ``I_ℓ[j]``); for a :class:`WeightRegion` it is ``[n_ℓ]`` (the masked entries in row-major order).
    """

    def __init__(self, model: nn.Module, region: Region | WeightRegion):
        super().__init__()
        self.region = region
        self.vector_axis = arch.vector_axis(model)
        self.params = nn.ParameterDict()
        self._selectors: dict[int, torch.Tensor] = {}
        for layer, selector in self._layer_selectors(region):
            weight = arch.down_proj(model, layer).weight
            selector = selector.to(weight.device)
            before = self._gather(weight, selector)
            self._selectors[layer] = selector
            self.register_buffer(f"before_{layer}", before.detach().clone(), persistent=False)
            self.params[str(layer)] = nn.Parameter(before.detach().float().clone())
        self._model_ref = [model]  # a list keeps the model out of this module's parameters
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._enabled = True
        self._scale = 1.0

    # -- layout ---------------------------------------------------------------------------------
    @staticmethod
    def _layer_selectors(region: Region | WeightRegion) -> Iterator[tuple[int, torch.Tensor]]:
        if isinstance(region, Region):
            yield from region.indices.items()
        else:
            for layer, mask in region.masks.items():
                if mask.any():
                    yield layer, mask

    def _gather(self, weight: torch.Tensor, selector: torch.Tensor) -> torch.Tensor:
        if selector.dtype == torch.bool:
            return weight[selector]
        return weight.index_select(self.vector_axis, selector).transpose(0, 1) if self.vector_axis == 1 else weight[selector]

    def _scatter(self, weight: torch.Tensor, selector: torch.Tensor, values: torch.Tensor) -> None:
        values = values.to(weight.dtype)
        if selector.dtype == torch.bool:
            weight[selector] = values
        elif self.vector_axis == 1:
            weight[:, selector] = values.T
        else:
            weight[selector] = values

    def before(self, layer: int) -> torch.Tensor:
        return getattr(self, f"before_{layer}")

    @property
    def layers(self) -> list[int]:
        return sorted(self._selectors)

    @property
    def model(self) -> nn.Module:
        return self._model_ref[0]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.params.values())

    # -- forward hooks --------------------------------------------------------------------------
    def _hook(self, layer: int):
        selector = self._selectors[layer]

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if not self._enabled:
                return None
            a = args[0]
            diff = self.params[str(layer)] - self.before(layer).float()
            if self._scale != 1.0:
                diff = diff * self._scale
            if selector.dtype == torch.bool:
                dense = torch.zeros(selector.shape, dtype=diff.dtype, device=diff.device).masked_scatter(selector, diff)
                extra = a @ (dense.T if self.vector_axis == 1 else dense).to(a.dtype)
            else:
                extra = a.index_select(-1, selector) @ diff.to(a.dtype)
            return output + extra.to(output.dtype)

        return hook

    def attach(self) -> RegionDelta:
        """Install the hooks; the model now computes with the region's entries replaced by ``P``."""
        if not self._handles:
            self._handles = [
                arch.down_proj(self.model, layer).register_forward_hook(self._hook(layer)) for layer in self.layers
            ]
        return self

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def attached(self) -> Iterator[RegionDelta]:
        self.attach()
        try:
            yield self
        finally:
            self.detach_hooks()

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the model as it was before training (``π_ref``) while the hooks stay installed."""
        previous, self._enabled = self._enabled, False
        try:
            yield
        finally:
            self._enabled = previous

    # -- mixing ---------------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, alpha: float = 1.0) -> None:
        """Write ``θ(α)`` into the model: region entries become ``P0 + α·(P − P0)``.

        Always computed from ``P0``, so repeated calls do not accumulate error. Remove the hooks
        first (a merged model with hooks attached would count the delta twice).
        """
        if self._handles:
            raise RuntimeError("detach the delta's hooks before merging it into the weights")
        for layer in self.layers:
            before = self.before(layer).float()
            # lerp is exact at both ends: α = 1 writes the trained entries themselves
            mixed = torch.lerp(before, self.params[str(layer)].detach(), float(alpha))
            self._scatter(arch.down_proj(self.model, layer).weight.data, self._selectors[layer], mixed)

    @torch.no_grad()
    def restore(self) -> None:
        """Write the original region entries back, bit for bit."""
        for layer in self.layers:
            self._scatter(arch.down_proj(self.model, layer).weight.data, self._selectors[layer], self.before(layer))

    @contextlib.contextmanager
    def mixed(self, alpha: float) -> Iterator[None]:
        """Context in which the model computes ``θ(α)``; ``θ_before`` is restored on exit.

        In fp32 the mixed entries are written into the weights (bit-exact at α = 0 and 1). In lower
        precision a small ``α·(P − P0)`` added to a bf16 weight is rounded away, so the fp32 delta is
        applied through the hooks instead, scaled by α, and the weights are never touched.
        """
        if self._weight_dtype() == torch.float32:
            self.merge(alpha)
            try:
                yield
            finally:
                self.restore()
            return
        previous, self._scale = self._scale, float(alpha)
        try:
            with self.attached():
                yield
        finally:
            self._scale = previous

    def _weight_dtype(self) -> torch.dtype:
        return arch.down_proj(self.model, self.layers[0]).weight.dtype if self.layers else torch.float32

    # -- storage --------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Per layer: the selector (value-vector indices, or a weight mask as packed bits), the region
        entries before training and after. Together with :meth:`header` this is the whole delta."""
        out: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            selector = self._selectors[layer]
            out[f"{layer}.selector"] = pack_bits(selector) if selector.dtype == torch.bool else selector.cpu().contiguous()
            out[f"{layer}.before"] = self.before(layer).cpu().contiguous()
            out[f"{layer}.after"] = self.params[str(layer)].detach().cpu().contiguous()
        return out

    def header(self) -> dict:
        """The region's shape facts (never its members: those are the selector tensors)."""
        if isinstance(self.region, Region):
            return {"kind": "value_vectors", "n_layers": self.region.n_layers, "d_ff": self.region.d_ff}
        return {"kind": "weights", "shapes": self.region.shapes()}

    def save(self, path: str | Path) -> None:
        """Store the delta (region entries before and after) as safetensors: small, no pickle."""
        save_file(self.state_tensors(), str(path), metadata={"region": json.dumps(self.header())})

    @staticmethod
    def _region(header: dict, tensors: dict[str, torch.Tensor]) -> Region | WeightRegion:
        selectors = {k.split(".")[0]: v for k, v in tensors.items() if k.endswith(".selector")}
        if header.get("kind") == "value_vectors":
            return Region(header["n_layers"], header["d_ff"], {int(l): v for l, v in selectors.items()})
        return WeightRegion.from_tensors(selectors, header)

    @classmethod
    def load(cls, model: nn.Module, path: str | Path) -> RegionDelta:
        """Rebuild a delta for ``model`` from :meth:`save`; checks that the model matches ``before``."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = json.loads(f.metadata()["region"])
        tensors = load_file(str(path))
        delta = cls(model, cls._region(header, tensors))
        for layer in delta.layers:
            if not torch.equal(tensors[f"{layer}.before"].to(delta.before(layer).device), delta.before(layer)):
                raise ValueError(
                    f"{path}: the stored delta was trained from a different model (layer {layer} region "
                    "entries differ); load it on the model it was trained from"
                )
            with torch.no_grad():
                delta.params[str(layer)].copy_(tensors[f"{layer}.after"])
        return delta
