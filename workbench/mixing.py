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
most, never a second or third copy of the model (:func:`workbench.models.memory.estimate_eval_memory`).

Precision. θ(α) is computed in fp32. In a bf16 model a small α·Δ written back into a bf16 weight
rounds away (the line becomes a staircase), so :class:`StateMixer` holds the changed parameters in
fp32 while mixing and computes their modules in fp32 (their parameters then take fp32 size);
``RegionDelta`` applies its fp32 delta through hooks. Either way the model still computes in bf16
between modules, and bf16 greedy generation depends on the decoding path (see below). To evaluate a
sweep exactly as an fp32 model would, cast the model for the sweep: :func:`evaluated_in` (the
``eval_dtype`` parameter; the paper parameter files sweep in float32: 32 GB for an 8B model).

Neighbouring α give nearly the same model, hence nearly the same greedy answers: when an
evaluation returns its generations (``generated_ids``), the sweep hands them to the next α as
drafts, which :class:`~workbench.evaluation.Evaluator` checks in one forward instead of decoding
again (:mod:`workbench.generation`). In fp32 the results are those of plain greedy decoding; in
bf16 a near tie between the two best tokens can go either way depending on the drafts and the
batch (``benchmarks/sweep.py`` counts such generations). Sweeps that start from the same model
(every sweep of one region seed starts at θo) can share their first point: pass it as ``first``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import pandas as pd
import torch
from torch import nn

from workbench.models import resolve_dtype
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

    θ(α) is computed in fp32 from θ_before's and θ_after's tensors as stored (``torch.lerp``: exact
    at both ends). In an fp32 model it is written into the parameters. In a model of lower precision
    (bf16, fp16) writing it back into the model's dtype would round small updates away (at α = 0.1 a
    bf16 weight moves in steps of whole ulps, not by α·Δ), so each changed parameter is held in fp32
    while mixed and its module computes in fp32: its floating inputs are cast up and its outputs back
    to the model's dtype. θ(α) is then exact to fp32 precision; the activations between modules stay
    in the model's dtype. Unchanged parameters are never touched.

    Reads: each changed tensor of θ_after and of θ_before is read once per α (and θ_before once more
    when the model is restored). Inside :meth:`held` (what :func:`mixing_sweep` uses) the model is
    restored once, when the block ends, not after every α: the next α overwrites the same tensors.

    Args:
        model: the model at θ_before, on its device.
        after: θ_after's tensors by parameter name: a state dict (on any device) or a
            :class:`SafetensorsState`. Only tensors that differ from θ_before are ever mixed.
        before: θ_before's tensors, when they are at hand off the device (e.g. the before model's
            folder); otherwise the differing parameters are copied to ``offload`` once.
        offload: where the copy of θ_before lives (host memory by default).
        chunk_elements: entries mixed per slice; bounds the device memory mixing needs.

    Device memory: an fp32 model plus three fp32 slices. A bf16 model's changed parameters take
    fp32 size while mixed (full-parameter unlearning: the size of the model in fp32).
    """

    def __init__(self, model: nn.Module, after: Mapping[str, torch.Tensor], *, before: Mapping[str, torch.Tensor] | None = None,
                 offload: str | torch.device = "cpu", chunk_elements: int = 2**24):
        self.model, self.after, self.chunk = model, after, chunk_elements
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(after))
        if missing:
            raise ValueError(f"θ_after lacks {len(missing)} of the model's parameters, e.g. {missing[:3]}: "
                             "not the same architecture?")
        self.names = [name for name, p in params.items()
                      if not self._same(p if before is None else before[name], after[name], p.shape)]
        self.before = before if before is not None else {n: params[n].detach().to(offload, copy=True) for n in self.names}
        self._dtypes: dict[str, torch.dtype] = {}  # parameters held in fp32 while mixed: their own dtype
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._holding = self._dirty = False

    @torch.no_grad()
    def _same(self, b: torch.Tensor, a: torch.Tensor, shape: torch.Size) -> bool:
        if a.shape != shape:
            raise ValueError(f"θ_after has shape {tuple(a.shape)} where the model has {tuple(shape)}")
        b, a = b.detach().reshape(-1), a.reshape(-1)
        # compared in fp32 (not in the model's dtype): an update that bf16 would round away is still an update
        return all(torch.equal(b[i : i + self.chunk].float(), a[i : i + self.chunk].to(b.device).float())
                   for i in range(0, b.numel(), self.chunk))

    @torch.no_grad()
    def _write(self, alpha: float) -> None:
        params = dict(self.model.named_parameters())
        for name in self.names:
            p = params[name]
            if p.dtype != torch.float32 and name not in self._dtypes:
                self._dtypes[name] = p.dtype
                p.data = torch.empty(p.shape, dtype=torch.float32, device=p.device)
            flat, before, after = p.detach().view(-1), self.before[name].reshape(-1), self.after[name].reshape(-1)
            for i in range(0, flat.numel(), self.chunk):  # moved in their own dtype, converted on the device
                b, a = before[i : i + self.chunk].to(p.device).float(), after[i : i + self.chunk].to(p.device).float()
                flat[i : i + self.chunk].copy_(torch.lerp(b, a, alpha))
        if self._dtypes and not self._hooks:
            self._hooks = _compute_in_fp32(self.model, {id(params[n]): d for n, d in self._dtypes.items()})
        self._dirty = True

    @torch.no_grad()
    def restore(self) -> None:
        """Put θ_before back (bit for bit: the model's own dtype and values)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        params = dict(self.model.named_parameters())
        for name in self.names:
            p, before = params[name], self.before[name]
            if name in self._dtypes:
                p.data = before.to(p.device, self._dtypes.pop(name), copy=True).reshape(p.shape)
                continue
            flat, before = p.detach().view(-1), before.reshape(-1)
            for i in range(0, flat.numel(), self.chunk):
                flat[i : i + self.chunk].copy_(before[i : i + self.chunk])
        self._dirty = False

    @contextlib.contextmanager
    def mixed(self, alpha: float) -> Iterator[None]:
        """The model at θ(α) inside the block; θ_before again on exit (inside :meth:`held`: when that ends)."""
        self._write(alpha)
        try:
            yield
        finally:
            if not self._holding:
                self.restore()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Mix several α in a row without restoring θ_before in between; restored when the block ends
        (also when it raises)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            if self._dirty:
                self.restore()


def _compute_in_fp32(model: nn.Module, dtypes: dict[int, torch.dtype]) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks on every module that owns one of the parameters ``dtypes`` names (by ``id``): floating
    inputs cast to fp32, floating outputs back to the parameter's own dtype."""
    handles = []
    for name, module in model.named_modules(remove_duplicate=False):
        owned = [dtypes[id(p)] for p in module._parameters.values() if p is not None and id(p) in dtypes]
        if not owned:
            continue
        if next(module.children(), None) is not None:
            for handle in handles:
                handle.remove()
            raise ValueError(f"module {name!r} owns a changed parameter and has submodules: it cannot be computed "
                             "in fp32 alone; evaluate the whole model in float32 (dtype='float32')")
        dtype = owned[0]
        handles.append(module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True))
        handles.append(module.register_forward_hook(lambda m, args, out, dtype=dtype: _cast(out, dtype)))
    return handles


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _inputs_to_fp32(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return _cast(args, torch.float32), {k: _cast(v, torch.float32) for k, v in kwargs.items()}


@contextlib.contextmanager
def evaluated_in(model: nn.Module, dtype: str | torch.dtype | None) -> Iterator[None]:
    """The model's floating parameters and buffers cast to ``dtype`` inside the block (e.g. a bf16
    model swept in fp32), each back to its own dtype on exit. ``None``/``""``: unchanged.

    The cast back is exact when the block leaves the values it found (a mixer restores θ_before): a
    bf16 value is an fp32 value. Device memory: the model's size in ``dtype``.
    """
    if not dtype:
        yield
        return
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype)
    own = {}
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point() and t.dtype != dtype and id(t) not in own:
                own[id(t)] = (t, t.dtype)
                t.data = t.data.to(dtype)
    try:
        yield
    finally:
        with torch.no_grad():
            for t, original in own.values():
                t.data = t.data.to(original)


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
    held = getattr(mixer, "held", contextlib.nullcontext)  # a StateMixer restores θ_before once, at the end
    with held():
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
