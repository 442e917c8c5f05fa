"""Model folders the workbench writes: complete, and loadable by the transformers our users have.

A saved θp / θr / θ_full folder holds ``config.json``, the tokenizer files and ``model.safetensors``
(what ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` read). Two
things transformers 5 writes are not understood by transformers 4.x, which many GPU users still
run, and one of them fails *silently*:

* ``tokenizer_config.json`` names the class ``TokenizersBackend``; 4.x raises "does not exist".
  Our tokenizers are plain ``tokenizer.json`` tokenizers, which 4.x loads as
  ``PreTrainedTokenizerFast``.
* ``config.json`` keeps RoPE settings in ``rope_parameters`` only; 4.x ignores that key and builds
  the model with its default ``rope_theta`` (10,000 instead of Llama-3.1's 500,000), a different
  model with no error. The legacy keys ``rope_theta`` / ``rope_scaling`` are written alongside.

:func:`save_model_folder` writes the folder and then adds these compatibility keys (transformers 5
reads the folder exactly as before).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG, TOKENIZER_CONFIG = "config.json", "tokenizer_config.json"
V4_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def save_model_folder(model, tokenizer, folder: str | Path, *, state_dict: dict | None = None) -> Path:
    """Save ``model`` (or ``state_dict`` into its architecture) and ``tokenizer`` as a complete folder."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
    tokenizer.save_pretrained(folder)
    make_v4_compatible(folder)
    return folder


def make_v4_compatible(folder: str | Path) -> None:
    """Add the keys transformers 4.x needs to load a folder written by transformers 5 (see above)."""
    folder = Path(folder)
    _update_json(folder / TOKENIZER_CONFIG, _tokenizer_v4)
    _update_json(folder / CONFIG, _config_v4)


def _update_json(path: Path, change) -> None:
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        new = change(dict(data))
        if new != data:
            path.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _tokenizer_v4(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("tokenizer_class") == "TokenizersBackend":
        data["tokenizer_class"] = V4_TOKENIZER_CLASS
    return data


def _config_v4(data: dict[str, Any]) -> dict[str, Any]:
    rope = data.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        data.setdefault("rope_theta", rope["rope_theta"])
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") != "default":
            data.setdefault("rope_scaling", scaling)
    if "dtype" in data:
        data.setdefault("torch_dtype", data["dtype"])  # the name before transformers 4.56
    return data
