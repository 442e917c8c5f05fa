"""Stand-in models under the paper's hub ids: tiny, offline, and loaded by exactly the GPU user's code.

The paper's models (``meta-llama/Llama-3.1-8B-Instruct``, ``allenai/OLMo-2-1124-7B-Instruct``) cannot
be downloaded here and would not run on a CPU. A *stand-in* has the same architecture class and the
features of it that the workbench's code paths touch, at a size a CPU trains in seconds:

* **Llama-3.1** (``LlamaForCausalLM``): grouped-query attention (fewer key/value heads than query
  heads), RoPE scaling of type ``llama3`` with θ = 500,000, an untied LM head, 32 decoder layers
  (so the paper's ``rmu_layer: 21`` is a valid layer), BOS ``<|begin_of_text|>``, end of turn
  ``<|eot_id|>`` as EOS, and a Llama-3.1-style chat template (``<|start_header_id|>role<|end_header_id|>``
  headers, a system header carrying ``date_string``).
* **OLMo-2** (``Olmo2ForCausalLM``): q/k RMS norms and post-norm decoder layers, 32 layers,
  ``<|endoftext|>`` as BOS and EOS, ``<|pad|>``, and OLMo-2-Instruct's ``<|user|>`` / ``<|assistant|>``
  chat template.

Each gets a byte-level BPE tokenizer trained on the data's text (TOFU, and LUME when present), plus
the architecture's special tokens, and random weights from a seed. :func:`build_hub_cache` lays
them out as a Hugging Face hub cache, ``$HF_HOME/hub/models--<org>--<name>/{blobs, refs/main,
snapshots/<commit>}``, with the chat template in ``chat_template.jinja`` as transformers 5 saves it,
so that ``load_pretrained("meta-llama/Llama-3.1-8B-Instruct")`` with ``HF_HUB_OFFLINE=1`` resolves
them through ``huggingface_hub`` like the real downloads. The commit is a hash of the snapshot's
files, so rebuilding the same stand-in gives the same commit.

These are *plumbing* stand-ins: random weights know nothing, so runs on them prove that every
stage executes and writes what it should, not any result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

LLAMA_ID = "meta-llama/Llama-3.1-8B-Instruct"
OLMO_ID = "allenai/OLMo-2-1124-7B-Instruct"

# A reduced Llama-3.1 template: the same headers, BOS, date line and end-of-turn tokens as Meta's
# (tool calling left out). ``date_string`` is what workbench.data.formatting pins.
LLAMA_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}\n"
)
# OLMo-2-1124-Instruct's template (system / user / assistant turns, EOS after each answer).
OLMO_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{% if not loop.last %}"
    "{{ '<|assistant|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class StandIn:
    """One stand-in: the hub id it answers to, its config class and fields, tokens and template.

    ``header``: the text every templated prompt starts with (what the rehearsal test looks for).
    """

    hub_id: str
    config_class: str
    config: dict
    bos: str
    eos: str
    pad: str | None
    extra_tokens: tuple[str, ...]
    chat_template: str
    header: str
    seed: int = 0
    vocab_size: int = 1024
    generation: dict = field(default_factory=dict)


# [choice] width 16 and 1,024 tokens: bf16 matmuls are emulated on most CPUs (7x slower than fp32
# here), and the paper's depth of 32 layers is kept so that ``rmu_layer: 21`` is a valid layer.
SHAPE = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=32, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=False)

STANDINS: dict[str, StandIn] = {
    LLAMA_ID: StandIn(
        hub_id=LLAMA_ID, config_class="LlamaConfig",
        config={**SHAPE, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
        extra_tokens=("<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>"),
        chat_template=LLAMA_TEMPLATE, header="<|begin_of_text|><|start_header_id|>system<|end_header_id|>",
    ),
    OLMO_ID: StandIn(
        hub_id=OLMO_ID, config_class="Olmo2Config",
        config={**SHAPE, "num_key_value_heads": 4, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                "rope_theta": 500000.0},
        bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>",
        extra_tokens=("<|system|>", "<|user|>", "<|assistant|>"),
        chat_template=OLMO_TEMPLATE, header="<|endoftext|><|user|>\n",
    ),
}


def corpus(folders: Iterable[str | Path]) -> Iterator[str]:
    """Every string value of every JSON line of every ``*.jsonl`` file in ``folders`` (a line that is not
    JSON, as in TOFU's ``idontknow.jsonl``, is taken as text)."""
    def strings(value) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)

    for folder in folders:
        for path in sorted(Path(folder).glob("*.jsonl")):
            for line in filter(str.strip, path.read_text(encoding="utf-8").splitlines()):
                yield from strings(json.loads(line)) if line.lstrip().startswith("{") else [line]


def standin_tokenizer(spec: StandIn, texts: Iterable[str]):
    """Byte-level BPE trained on ``texts`` with ``spec``'s special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = list(dict.fromkeys([spec.bos, spec.eos, *([spec.pad] if spec.pad else []), *spec.extra_tokens]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=spec.bos, eos_token=spec.eos,
                                  **({"pad_token": spec.pad} if spec.pad else {}))
    out.chat_template = spec.chat_template
    return out


def standin_model(spec: StandIn, tokenizer):
    """The stand-in's randomly initialised causal LM (seeded), with the tokenizer's vocabulary."""
    import transformers as tf

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = getattr(tf, spec.config_class)(vocab_size=len(tokenizer), **spec.config, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def repo_folder(hub_id: str) -> str:
    """The hub cache's folder name for a model id (``models--org--name``)."""
    return "models--" + hub_id.replace("/", "--")


def hub_cache_dir(hf_home: str | Path | None = None) -> Path:
    """``$HF_HOME/hub`` (what huggingface_hub reads with ``HF_HOME`` set), or ``<hf_home>/hub``."""
    root = Path(hf_home) if hf_home else Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return root / "hub"


def snapshot_commit(files: dict[str, bytes]) -> str:
    """A 40-hex "commit" of a snapshot: the SHA-1 of its file names and contents (stable across rebuilds)."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def write_hub_repo(hub_id: str, files: dict[str, bytes], hub_dir: str | Path) -> str:
    """Write ``files`` as one snapshot of ``hub_id`` in a hub cache (blobs by SHA-256, snapshot links,
    ``refs/main``); returns the commit. An existing snapshot with the same commit is kept as is."""
    repo = Path(hub_dir) / repo_folder(hub_id)
    commit = snapshot_commit(files)
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def build_standin(spec: StandIn, texts: list[str], hub_dir: str | Path) -> str:
    """Build ``spec`` (tokenizer, model) and write it into the hub cache at ``hub_dir``; returns the commit."""
    from workbench.models.folders import save_model_folder

    tokenizer = standin_tokenizer(spec, texts)
    model = standin_model(spec, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        save_model_folder(model, tokenizer, tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    missing = {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} - set(files)
    if missing:
        raise RuntimeError(f"stand-in {spec.hub_id}: the saved folder lacks {sorted(missing)}")
    return write_hub_repo(spec.hub_id, files, hub_dir)


def build_hub_cache(hf_home: str | Path, data_dirs: Iterable[str | Path], ids: Iterable[str] = tuple(STANDINS),
                    *, force: bool = False) -> dict[str, str]:
    """Every stand-in in ``ids`` under ``<hf_home>/hub``; returns ``{hub id: commit}``.

    A stand-in whose ``refs/main`` already names an existing snapshot is kept (built once, cached)
    unless ``force``.
    """
    hub_dir, data_dirs = hub_cache_dir(hf_home), list(data_dirs)
    texts: list[str] | None = None
    commits = {}
    for hub_id in ids:
        if hub_id not in STANDINS:
            raise ValueError(f"no stand-in for {hub_id!r}; known: {sorted(STANDINS)}")
        repo = hub_dir / repo_folder(hub_id)
        ref = repo / "refs" / "main"
        if not force and ref.is_file() and (repo / "snapshots" / ref.read_text().strip()).is_dir():
            commits[hub_id] = ref.read_text().strip()
            continue
        if force and repo.exists():
            shutil.rmtree(repo)
        if texts is None:
            texts = list(corpus(data_dirs))
            if not texts:
                raise FileNotFoundError(f"no *.jsonl text in {[str(d) for d in data_dirs]}: point data_dirs at TOFU")
        commits[hub_id] = build_standin(STANDINS[hub_id], texts, hub_dir)
    return commits
