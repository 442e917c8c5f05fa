"""Architecture facts as data: where each model keeps its MLP value vectors.

A transformer MLP computes ``M = W_down · a`` where ``a`` (shape ``[..., d_ff]``) holds the
*memory coefficients*. Column ``i`` of ``W_down`` is the *value vector* ``v_{ℓ,i}``
(shape ``[d_model]``): the MLP output is ``Σ_i a_i · v_{ℓ,i}`` (Geva et al., 2021). Lee et al. (2025)
localize knowledge to sets of such vectors.

Every architecture stores them a little differently. HF LLaMA/OLMo2/Qwen2/Mistral keep
``down_proj.weight`` as ``[d_model, d_ff]`` (vector = a column, ``vector_axis=1``); GPT-2's
``Conv1D`` stores the transpose ``[d_ff, d_model]`` (vector = a row, ``vector_axis=0``). Rather than
branching on model names, the facts live in :data:`ARCHITECTURES`, keyed by ``config.model_type``.
Adding an architecture is one row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture keeps its decoder layers and MLP down-projections.

    Attributes:
        layers: dotted path from the model to the list of decoder layers.
        mlp: dotted path from a decoder layer to its MLP module.
        down_proj: dotted path from the MLP to the down-projection (the value-vector matrix).
        vector_axis: axis of ``down_proj.weight`` that indexes value vectors
            (1 for ``nn.Linear`` ``[d_model, d_ff]``, 0 for GPT-2's ``Conv1D`` ``[d_ff, d_model]``).
        d_ff_key: config attribute holding the MLP width (``None``: 4 × hidden size, as in GPT-2).
    """

    layers: str
    mlp: str = "mlp"
    down_proj: str = "down_proj"
    vector_axis: int = 1
    d_ff_key: str | None = "intermediate_size"


_LLAMA_LIKE = ArchSpec(layers="model.layers")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "phi3": ArchSpec(layers="model.layers", down_proj="down_proj"),
    "gpt_neox": ArchSpec(layers="gpt_neox.layers", down_proj="dense_4h_to_h"),
    "gpt2": ArchSpec(layers="transformer.h", down_proj="c_proj", vector_axis=0, d_ff_key="n_inner"),
}


class UnsupportedArchitectureError(ValueError):
    """The model's ``config.model_type`` has no row in :data:`ARCHITECTURES`."""


def arch_spec(model_or_type: nn.Module | str) -> ArchSpec:
    """Return the :class:`ArchSpec` for a model (or a ``model_type`` string)."""
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(
            f"unsupported architecture {model_type!r}: value vectors are known for {supported}. "
            "Add a row to workbench.models.architectures.ARCHITECTURES (decoder-layer path, MLP path, "
            "down-projection name, vector axis) to support it."
        ) from None


def _get(obj: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers, in order."""
    return _get(model, arch_spec(model).layers)


def mlp_module(model: nn.Module, layer: int) -> nn.Module:
    """The MLP module of decoder layer ``layer``."""
    return _get(decoder_layers(model)[layer], arch_spec(model).mlp)


def down_proj(model: nn.Module, layer: int) -> nn.Module:
    """The down-projection of layer ``layer``; its weight holds the layer's value vectors."""
    spec = arch_spec(model)
    return _get(_get(decoder_layers(model)[layer], spec.mlp), spec.down_proj)


def n_layers(model: nn.Module) -> int:
    return len(decoder_layers(model))


def d_ff(model: nn.Module) -> int:
    """Number of value vectors per layer."""
    spec = arch_spec(model)
    return down_proj(model, 0).weight.shape[spec.vector_axis]


def vector_axis(model: nn.Module) -> int:
    return arch_spec(model).vector_axis


def value_vectors(model: nn.Module, layer: int) -> torch.Tensor:
    """Value vectors of one layer as a ``[d_ff, d_model]`` view (row i = v_{layer,i})."""
    weight = down_proj(model, layer).weight
    return weight.T if vector_axis(model) == 1 else weight


def down_proj_names(model: nn.Module) -> list[str]:
    """Fully qualified parameter names of every layer's down-projection weight."""
    spec = arch_spec(model)
    return [f"{spec.layers}.{i}.{spec.mlp}.{spec.down_proj}.weight" for i in range(n_layers(model))]
