"""The decoding cache: rows in slots of one preallocated KV cache, written in place.

transformers' default cache concatenates each step's keys and values to the cache, copying all of it
at every decoding step; dropping a finished row or merging new ones copies it again. Here a decoding
step writes only its new columns (:func:`buffer_cache`, a cache layer over preallocated buffers), a
finished row frees its slot, and the next prompt's cache is copied into that slot (:class:`Slots`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from workbench.generation import Layers


@functools.cache
def _buffer_layer():
    """A transformers cache layer over preallocated ``[batch, kv_heads, capacity, head_dim]`` buffers:
    a forward writes its new columns in place after the filled ones (transformers' own layer
    concatenates, copying the whole cache at every decoding step)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor, width: int):
            super().__init__()
            self.buffers, self.width, self.is_initialized = (keys, values), width, True
            self.device, self.dtype = keys.device, keys.dtype
            self.keys, self.values = keys[:, :, :width], values[:, :, :width]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            keys, values = self.buffers
            end = self.width + key_states.shape[-2]
            if end > keys.shape[-2]:
                raise RuntimeError(f"cache buffer of {keys.shape[-2]} columns cannot take {end}")
            keys[:, :, self.width : end], values[:, :, self.width : end] = key_states, value_states
            self.width, self.keys, self.values = end, keys[:, :, :end], values[:, :, :end]
            return self.keys, self.values

    return BufferLayer


def buffer_cache(buffers: Layers, width: int):
    """A cache whose layers are ``buffers`` (filled up to column ``width``), written in place."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layers = [_buffer_layer()(keys, values, width) for keys, values in buffers]
    return cache


@dataclass
class Ready:
    """Rows about to decode: their cache (prompt and accepted draft), mask, next position id, newest token."""

    rows: list[int]
    layers: Layers
    mask: torch.Tensor  # [n, cache columns]
    positions: torch.Tensor  # [n] position id of ``last``
    last: torch.Tensor  # [n] the newest token, not yet in the cache
    open: list[int]  # indices of the rows whose generation goes on


class Slots:
    """Rows being decoded, one per slot of a preallocated cache ``[slots, kv_heads, capacity, head_dim]``.

    Each step writes every slot's new columns at ``width``, in place; a row that ends frees its slot
    (its columns are masked) and the next prompt's cache is copied into that slot's columns ending at
    ``width`` (each row attends only to its own columns, so they need not line up). When a step would
    pass ``capacity``, or ``width`` is more than twice any row's attended columns (attention costs
    the width), each row's attended columns are packed into the first columns (keys carry their
    rotary position already, so attention over them is unchanged).
    """

    def __init__(self, like: Layers, n_slots: int, capacity: int):
        self.layers = [tuple(t.new_zeros(n_slots, t.shape[1], capacity, t.shape[3]) for t in kv) for kv in like]
        device = like[0][0].device
        self.mask = torch.zeros(n_slots, capacity, dtype=torch.long, device=device)
        self.positions = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.last = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.rows: list[int | None] = [None] * n_slots
        self.width = 0

    def active(self) -> list[int]:
        return [s for s, row in enumerate(self.rows) if row is not None]

    def free(self) -> list[int]:
        return [s for s, row in enumerate(self.rows) if row is None]

    def resized(self, n_slots: int, capacity: int) -> Slots:
        """The active rows in a cache of ``n_slots`` slots (at least as many) and ``capacity`` columns."""
        keep = self.active()
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        new = Slots([(k[:1], v[:1]) for k, v in self.layers], n_slots, capacity)
        width = min(self.width, capacity)  # packed before any shrink of the capacity
        for (k, v), (new_k, new_v) in zip(self.layers, new.layers):
            new_k[: len(keep), :, :width], new_v[: len(keep), :, :width] = k[index, :, :width], v[index, :, :width]
        new.mask[: len(keep), :width] = self.mask[index, :width]
        new.positions[: len(keep)], new.last[: len(keep)] = self.positions[index], self.last[index]
        new.rows[: len(keep)], new.width = [self.rows[s] for s in keep], width
        return new

    def put(self, slots: list[int], ready: Ready) -> None:
        """Ready rows ``ready.open`` into ``slots`` (as many, free, and wide enough: see :meth:`reserve`).
        Only their attended columns are copied (not a prompt's padding or a draft's rejected columns, which
        would widen every later step's attention)."""
        to, frm = (torch.tensor(i, device=self.mask.device) for i in (slots, ready.open))
        mask, order = _attended_first(ready.mask[frm])
        n = mask.shape[1]
        self.width = max(self.width, n)  # columns beyond ``width`` are masked for every row
        cols = slice(self.width - n, self.width)
        self.mask[to] = 0
        self.mask[to, cols] = mask
        for (k, v), (rk, rv) in zip(self.layers, ready.layers):
            k[to, :, cols], v[to, :, cols] = _gather_columns(rk[frm], order), _gather_columns(rv[frm], order)
        self.positions[to], self.last[to] = ready.positions[frm], ready.last[frm]
        for slot, i in zip(slots, ready.open):
            self.rows[slot] = ready.rows[i]

    def release(self, slot: int) -> None:
        self.rows[slot] = None
        self.mask[slot] = 0

    def pack(self) -> None:
        """Each row's attended columns into the first columns, in their order; ``width`` = the most of any row."""
        mask, order = _attended_first(self.mask[:, : self.width])
        width = mask.shape[1]
        for layer in self.layers:
            for t in layer:
                t[:, :, :width] = _gather_columns(t[:, :, : self.width], order)
        self.mask[:, :width] = mask
        self.mask[:, width:] = 0
        self.width = width

    def reserve(self, columns: int) -> Slots:
        """Room for ``columns`` more columns after ``width``: packed, and grown if packing is not enough."""
        capacity = self.mask.shape[1]
        if self.width + columns <= capacity and self.width <= 2 * int(self.mask.sum(-1).max()):
            return self
        self.pack()
        if self.width + columns <= capacity:
            return self
        return self.resized(len(self.rows), 2 * (self.width + columns))

    def cache(self):
        return buffer_cache(self.layers, self.width)


def _attended_first(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, order)`` of each row's attended columns moved first, in their order, cut to the most any row has:
    column ``j`` of row ``i`` comes from column ``order[i, j]``."""
    width = int(mask.sum(-1).max()) if mask.numel() else 0
    sorted_mask, order = torch.sort(mask, dim=1, stable=True, descending=True)
    return sorted_mask[:, :width], order[:, :width]


def _gather_columns(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Columns ``order`` (``[rows, n]``) of each row of a ``[rows, kv_heads, columns, head_dim]`` cache tensor."""
    return t.gather(2, order[:, None, :, None].expand(t.shape[0], t.shape[1], order.shape[1], t.shape[3]))
