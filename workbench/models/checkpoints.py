"""Checkpoints to evaluate: hub ids, local folders, loaded models, or PEFT/LoRA adapter folders.

:func:`workbench.experiments.pair.evaluate_pair` compares a model before unlearning with one or
more unlearned versions of it. Only θ_before is loaded onto the device; each θ_after is read as
tensors off the device (:func:`after_tensors`): a saved folder through :class:`SafetensorsState`
(memory-mapped, one tensor at a time; a folder with only ``pytorch_model.bin`` is loaded on the
CPU), a hub id the same way after downloading its files, a loaded model as its parameters, and a
PEFT/LoRA adapter folder merged in fp32 into a host-memory copy of its base model (the ``peft``
package, an optional extra: ``pip install 'loc-unlearn-workbench[peft]'``). An adapter trained on
another base than θ_before is refused by name (:func:`adapter_base_problem`)."""

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


# What transformers reads from a model repository besides the weights: configs and tokenizer.json
# (*.json), the chat template (transformers >= 5 saves it as chat_template.jinja, not in
# tokenizer_config.json), SentencePiece models (tokenizer.model), vocabularies and merges (*.txt,
# *.tiktoken) and custom code (*.py, run only with trust_remote_code). Not: other weight formats
# (*.bin, *.pth, *.gguf, Llama's original/consolidated.*.pth), unless a repository has no safetensors.
HUB_FILES = ["*.safetensors", "*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]
HUB_BIN_WEIGHTS = ["pytorch_model*.bin", "*.json"]


def local_folder(spec: str | Path, *, revision: str = "") -> Path:
    """A local folder as is; a hub id downloaded into the hub cache with what its model and tokenizer
    need (:data:`HUB_FILES`; ``pytorch_model*.bin`` only when the repository has no safetensors)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(str(spec), revision=revision or None, allow_patterns=HUB_FILES))
    if not any(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(str(spec), revision=revision or None, allow_patterns=HUB_BIN_WEIGHTS))
    return folder


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


def folder_tensors(folder: str | Path) -> Mapping[str, torch.Tensor]:
    """A model folder's tensors off the device: its safetensors read lazily, or, for a folder with
    only ``pytorch_model.bin``, the model loaded on the CPU in its stored dtype."""
    try:
        return SafetensorsState(folder)
    except FileNotFoundError:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto")
        return {name: p.detach() for name, p in model.named_parameters()}


def after_tensors(spec, before: nn.Module, *, before_spec=None, revision: str = "") -> Mapping[str, torch.Tensor]:
    """θ_after's tensors by parameter name, off the device where it can be (see the module docstring).
    ``before_spec``: where ``before`` came from (an adapter's base is re-read from there, on the CPU)."""
    if isinstance(spec, nn.Module):
        return {name: p.detach() for name, p in spec.named_parameters()}
    if is_adapter(spec):
        return merged_adapter(spec, before, before_spec)
    return folder_tensors(local_folder(spec, revision=revision))


def host_copy(model: nn.Module, host: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` whose tensors are made directly in ``host`` memory (floating ones in ``dtype``
    when given): one tensor at a time leaves the device, never a copy of the model on it."""
    memo: dict[int, torch.Tensor] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in memo:
            moved = t.detach().to(host, copy=True)
            moved = moved.to(dtype) if dtype is not None and moved.is_floating_point() else moved
            memo[id(t)] = nn.Parameter(moved, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else moved
    return copy.deepcopy(model, memo)


def merged_adapter(folder: str | Path, before: nn.Module, before_spec=None) -> dict[str, torch.Tensor]:
    """A PEFT/LoRA adapter merged into a host-memory fp32 copy of ``before``: θ_after = θ_before + ΔW.
    In fp32 so that a small ΔW is not rounded away when ``before`` runs in bf16."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ImportError(f"{folder} is a PEFT/LoRA adapter folder; reading it needs the peft package: {PEFT_HINT}") from None
    if isinstance(before_spec, (str, Path)):  # read the base again on the CPU: no second copy on the device
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(local_folder(before_spec)), dtype=torch.float32)
    else:
        base = host_copy(before, "cpu", torch.float32)
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    return {name: p.detach() for name, p in merged.named_parameters()}


def adapter_base(folder: str | Path) -> str:
    """The base model an adapter was trained on (``base_model_name_or_path``; '' when not recorded)."""
    return json.loads((Path(folder).expanduser() / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path") or ""


def _names_of(spec: str) -> set[str]:
    """What a model reference may be called: itself, its resolved folder, its last part, and the hub id
    of a hub-cache snapshot folder (``…/models--org--name/snapshots/<commit>``)."""
    path = Path(spec.rstrip("/")).expanduser()
    names = {spec.rstrip("/"), path.name}
    if path.exists():
        names.add(str(path.resolve()))
    for part in path.parts:
        if part.startswith("models--"):
            names |= {part[len("models--"):].replace("--", "/"), part.split("--")[-1]}
    return names - {""}


def adapter_base_problem(adapter, before) -> str | None:
    """Why ``adapter`` does not belong on ``before`` (a hub id, folder or loaded model), or None: its
    recorded base must name the same model (the same id or folder, or the same last path part)."""
    if not is_adapter(adapter):
        return None
    base = adapter_base(adapter)
    if isinstance(before, nn.Module):
        name = getattr(getattr(before, "config", None), "name_or_path", "") or ""
    else:
        name = str(before or "")
    if not base or not name or _names_of(base) & _names_of(name):
        return None
    config = Path(adapter).expanduser() / ADAPTER_CONFIG
    return (f"{adapter} is a PEFT adapter of {base!r} (base_model_name_or_path in {config}), but 'before' is {name!r}: "
            f"pass its base as 'before' (--before {base}), or, if {name!r} is that same model under another name, "
            f"set base_model_name_or_path in {config} to it")
