"""Model mixing: evaluate the straight line between the model before and after unlearning (SPEC §6).

``θ(α) = (1 − α)·θ_before + α·θ_after`` for α = 0, 0.05, …, 1 (21 points; Wang et al. 2025a call
it model mixing; their code's ``r`` weights the *original* model, the opposite of this α). Each
point is evaluated, giving the FS–RS curve (AUES) and the MU–FQ curve (MU95) of
:mod:`workbench.curves`.

With region-restricted unlearning only the region's entries differ between θ_before and θ_after,
so :func:`mixing_sweep` writes ``θ(α)`` into those entries in place
(:meth:`workbench.delta.RegionDelta.mixed`): no reload, no copy of the model per α, and θ_before
is restored bit for bit afterwards, also when an evaluation raises. For unlearning that changed
every parameter, :class:`StateMixer` does the same with θ_after given as a state dict or as a model
folder read lazily (:class:`SafetensorsState`). It keeps **one** model on the device: θ_before and
θ_after stay in host memory or on disk, and each α is written tensor by tensor, in slices of at
most ``chunk_elements`` entries, so the device holds the model plus three such slices (fp32) at
most, never a second or third copy of the model. An 8B pair thus needs the memory of one 8B model
(:func:`workbench.models.memory.estimate_eval_memory`).

Neighbouring α give nearly the same model, hence nearly the same greedy answers: when an
evaluation returns its generations (``generated_ids``), the sweep hands them to the next α as
drafts, which :class:`~workbench.evaluation.Evaluator` checks in one forward instead of decoding
again (:mod:`workbench.generation`; the results are those of plain greedy decoding). Sweeps that
start from the same model (every sweep of one region seed starts at θo) can share their first
point: pass it as ``first``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import pandas as pd
import torch
from torch import nn

from workbench.models.checkpoints import SafetensorsState  # noqa: F401  (θ_after read lazily from a folder)
from workbench.progress import progress_bar as tqdm

ALPHAS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))


class Mixer(Protocol):
    """Anything that can put a model at ``θ(α)`` for the duration of a ``with`` block."""

    def mixed(self, alpha: float) -> contextlib.AbstractContextManager: ...


def interpolate_state_dicts(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``(1−α)·before + α·after`` per floating tensor (others copied from ``before``).

    ``torch.lerp`` is exact at both ends: α = 0 gives ``before`` and α = 1 gives ``after`` bit for bit.
    """
    if before.keys() != after.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(set(before) ^ set(after))[:5]}")
    out = {}
    for name, b in before.items():
        a = after[name]
        if b.is_floating_point():
            out[name] = torch.lerp(b.float(), a.float(), alpha).to(b.dtype)
        else:
            out[name] = b.clone()
    return out


class StateMixer:
    """Mix a whole model with θ_after in place, one tensor (slice) on the device at a time.

    Args:
        model: the model at θ_before, on its device.
        after: θ_after's tensors by parameter name: a state dict (on any device) or a
            :class:`SafetensorsState`. Only tensors that differ from θ_before are ever mixed.
        before: θ_before's tensors, when they are at hand off the device (e.g. the before model's
            folder); otherwise the differing parameters are copied to ``offload`` once.
        offload: where the copy of θ_before lives (host memory by default).
        chunk_elements: entries mixed per slice; bounds the device memory mixing needs.
    """

    def __init__(self, model: nn.Module, after: Mapping[str, torch.Tensor], *, before: Mapping[str, torch.Tensor] | None = None,
                 offload: str | torch.device = "cpu", chunk_elements: int = 2**24):
        self.model, self.after, self.chunk = model, after, chunk_elements
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(after))
        if missing:
            raise ValueError(f"θ_after lacks {len(missing)} of the model's parameters, e.g. {missing[:3]}: not the same architecture?")
        self.names = [name for name, p in params.items() if not self._same(p, after[name])]
        self.before = before if before is not None else {n: params[n].detach().to(offload, copy=True) for n in self.names}

    @torch.no_grad()
    def _same(self, p: torch.Tensor, other: torch.Tensor) -> bool:
        if p.shape != other.shape:
            raise ValueError(f"θ_after has shape {tuple(other.shape)} where the model has {tuple(p.shape)}")
        flat, o = p.detach().reshape(-1), other.reshape(-1)
        return all(torch.equal(flat[i : i + self.chunk], o[i : i + self.chunk].to(p.device, p.dtype))
                   for i in range(0, flat.numel(), self.chunk))

    @torch.no_grad()
    def _write(self, alpha: float | None) -> None:
        params = dict(self.model.named_parameters())
        for name in self.names:
            p, flat = params[name], params[name].detach().view(-1)
            before, after = self.before[name].reshape(-1), self.after[name].reshape(-1)
            for i in range(0, flat.numel(), self.chunk):
                b = before[i : i + self.chunk]
                if alpha is None:
                    flat[i : i + self.chunk].copy_(b)
                else:
                    a = after[i : i + self.chunk]
                    flat[i : i + self.chunk].copy_(torch.lerp(b.to(p.device, torch.float32), a.to(p.device, torch.float32), alpha))

    @contextlib.contextmanager
    def mixed(self, alpha: float) -> Iterator[None]:
        self._write(alpha)
        try:
            yield
        finally:
            self._write(None)


def mixing_sweep(
    model: nn.Module,
    mixer: Mixer,
    evaluate: Callable[[nn.Module], object],
    alphas: Sequence[float] = ALPHAS,
    *,
    progress: bool = True,
    first: object | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate ``model`` at every ``θ(α)``; the model is θ_before again on return.

    Args:
        model: the model at θ_before (a :class:`~workbench.delta.RegionDelta` must be detached).
        mixer: a ``RegionDelta`` (region-restricted unlearning) or a :class:`StateMixer`.
        evaluate: ``model -> EvalResult`` (e.g. a :class:`workbench.evaluation.Evaluator`), or any
            callable returning an object with ``summary`` (dict) and ``per_example`` (DataFrame).
            A result that also carries ``generated_ids`` makes the next call ``evaluate(model,
            drafts=generated_ids)``.
        first: the result of ``evaluate`` on θ_before, if already at hand (e.g.
            ``evaluator.memoised(model, start_key)``); used for α = 0, which must be ``alphas[0]``.

    Returns:
        ``(per_alpha, per_example)``: one row per α (``alpha`` then every summary key), and the
        per-example tables stacked with an ``alpha`` column first.
    """
    if first is not None and float(alphas[0]) != 0.0:
        raise ValueError(f"first is the result at α = 0, but the sweep starts at α = {alphas[0]}")
    rows, tables, drafts = [], [], None
    for i, alpha in enumerate(tqdm(list(alphas), desc="mixing sweep", disable=not progress, leave=False)):
        if i == 0 and first is not None:
            result = first
        else:
            with mixer.mixed(float(alpha)):
                result = evaluate(model) if drafts is None else evaluate(model, drafts=drafts)
        drafts = getattr(result, "generated_ids", None)
        rows.append({"alpha": float(alpha), **result.summary})
        table = result.per_example.copy()
        table.insert(0, "alpha", float(alpha))
        tables.append(table)
    return pd.DataFrame(rows), pd.concat(tables, ignore_index=True)
