"""Checkpoints to evaluate: hub ids, local folders, loaded models, or PEFT/LoRA adapter folders.

:func:`workbench.experiments.pair.evaluate_pair` compares a model before unlearning with one or
more unlearned versions of it. Only θ_before is loaded onto the device; each θ_after is read as
tensors off the device (:func:`after_tensors`): a saved folder through :class:`SafetensorsState`
(memory-mapped, one tensor at a time), a hub id the same way after downloading its files, a loaded
model as its parameters, and a PEFT/LoRA adapter folder merged into a host-memory copy of the base
model (the ``peft`` package, an optional extra: ``pip install 'loc-unlearn-workbench[peft]'``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
PEFT_HINT = "pip install 'loc-unlearn-workbench[peft]' (or pip install peft)"


class SafetensorsState(Mapping[str, torch.Tensor]):
    """The tensors of a saved model folder (``model.safetensors`` or its sharded index), read one at
    a time from the memory-mapped files when asked for: nothing is loaded up front."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = {name: folder / f for name, f in json.loads(index.read_text())["weight_map"].items()}
        elif (folder / "model.safetensors").is_file():
            with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
                files = dict.fromkeys(f.keys(), folder / "model.safetensors")
        else:
            raise FileNotFoundError(f"{folder}: no model.safetensors (or model.safetensors.index.json) to read")
        self._handles = {f: safe_open(str(f), framework="pt", device="cpu") for f in set(files.values())}
        self._files = files

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._handles[self._files[name]].get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def is_adapter(spec) -> bool:
    """A folder holding a PEFT adapter (``adapter_config.json``)."""
    return isinstance(spec, (str, Path)) and (Path(spec).expanduser() / ADAPTER_CONFIG).is_file()


def local_folder(spec: str | Path, *, revision: str = "") -> Path:
    """A local folder as is; a hub id downloaded (weights as safetensors, configs) into the hub cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(spec), revision=revision or None, allow_patterns=["*.safetensors", "*.json"]))


def hub_commit(hub_id: str, revision: str = "") -> str | None:
    """The commit of ``hub_id`` at ``revision`` ("" = main) in the local hub cache, ``None`` if not cached.
    (transformers 5 no longer records it as ``config._commit_hash``.)"""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, "config.json", revision=revision or None)
    return Path(path).parent.name if isinstance(path, str) else None


def checkpoint_name(spec) -> str:
    """A short label: the folder's or hub id's last part, or the model's class for a loaded model."""
    if isinstance(spec, nn.Module):
        return type(spec).__name__
    return Path(str(spec).rstrip("/")).name or str(spec)


def after_tensors(spec, before: nn.Module, *, before_spec=None, revision: str = "") -> Mapping[str, torch.Tensor]:
    """θ_after's tensors by parameter name, off the device where it can be (see the module docstring).
    ``before_spec``: where ``before`` came from (an adapter's base is re-read from there, on the CPU)."""
    if isinstance(spec, nn.Module):
        return {name: p.detach() for name, p in spec.named_parameters()}
    if is_adapter(spec):
        return merged_adapter(spec, before, before_spec)
    folder = local_folder(spec, revision=revision)
    try:
        return SafetensorsState(folder)
    except FileNotFoundError:  # e.g. only pytorch_model.bin: load it on the CPU
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=next(before.parameters()).dtype)
        return {name: p.detach() for name, p in model.named_parameters()}


def merged_adapter(folder: str | Path, before: nn.Module, before_spec=None) -> dict[str, torch.Tensor]:
    """A PEFT/LoRA adapter merged into a host-memory copy of ``before``: θ_after = θ_before + ΔW."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ImportError(f"{folder} is a PEFT/LoRA adapter folder; reading it needs the peft package: {PEFT_HINT}") from None
    if isinstance(before_spec, (str, Path)):  # read the base again on the CPU: no second copy on the device
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(local_folder(before_spec)), dtype=next(before.parameters()).dtype)
    else:
        base = copy.deepcopy(before).to("cpu")
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    return {name: p.detach() for name, p in merged.named_parameters()}
