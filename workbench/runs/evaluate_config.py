"""Parameters of ``notebooks/evaluate-checkpoints.ipynb``: the paper's evaluation of checkpoints
trained elsewhere (:func:`workbench.experiments.pair.evaluate_pair`).

Unlike the four experiments, nothing is trained here, so the config carries no training fields:
which checkpoints (``before``, ``after``, ``retain_model``), which data, how to evaluate. Built and
validated like every notebook config (:func:`workbench.runs.config.from_params`), and so before the
notebook's kernel starts: a TOFU folder that lacks a file the evaluation reads, a checkpoint folder
without weights (or adapter), and an adapter trained on another base than ``before`` are refused
in one line each, naming the fix.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from workbench.data.formatting import PROMPT_FORMATS
from workbench.data.tofu import FORGET_TO_RETAIN, HUB_ID, REFUSALS_SPLIT
from workbench.models.checkpoints import ADAPTER_CONFIG, adapter_base_problem, is_adapter
from workbench.runs.methods import _names
from workbench.runs.params import (
    at_least_two,
    device_name,
    model_problems,
    non_negative,
    one_of,
    param,
    positive,
    register_config,
)

NOTEBOOK = "evaluate-checkpoints"
TOFU_DIR_ENV = "WORKBENCH_TOFU_DIR"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@register_config(NOTEBOOK)
@dataclass(frozen=True)
class EvaluateCheckpointsConfig:
    """θ_before, the unlearned θ_after checkpoints (one curve each), θr for FQ, data and evaluation."""

    notebook: ClassVar[str] = NOTEBOOK
    method_kinds: ClassVar[tuple[str, ...]] = ()
    lr_kinds: ClassVar[tuple[str, ...]] = ()

    before: str = param("", "the model before unlearning: hub id or local folder")
    after: list[str] = param([], "unlearned checkpoints of 'before' (hub ids, local folders or PEFT/LoRA adapter folders); "
                                 "one curve each")
    labels: list[str] = param([], "one name per 'after' checkpoint (its method); [] -> the folder names")
    retain_model: str = param("", "θr, trained without the forget set: the reference of Forget Quality; "
                                  "'' -> FQ and MU95 left out")
    data: str = param("tofu", "TOFU or its synthetic miniature", one_of("dataset", lambda: ["synthetic-tofu", "tofu"]))
    data_dir: str = param("", "local TOFU folder; '' -> $WORKBENCH_TOFU_DIR, else the hub (locuslab/TOFU)")
    forget_split: str = param("forget10", "TOFU forget split", one_of("forget split", lambda: sorted(FORGET_TO_RETAIN)))
    n_retain_authors: int = param(0, "synthetic data: retain authors; TOFU: authors sampled (0: all)", non_negative)
    n_forget_authors: int = param(0, "synthetic data: forget authors; TOFU: the last n (0: all of the split)", non_negative)
    max_examples: int = param(0, "examples per evaluation split, drawn with 'seed' (0: all)", non_negative)
    seed: int = param(0, "seed of subsampling")
    prompt_format: str = param("workbench",
                               "'workbench' (scores every answer token) or 'open-unlearning' (its exact tokenisation)",
                               one_of("prompt format", lambda: list(PROMPT_FORMATS)))
    use_chat_template: bool | None = param(None, "None: the tokenizer's chat template when it has one")
    es_floor: bool = param(False, "ES with open-unlearning's 1/|y| floor")
    n_alpha: int = param(21, "mixing coefficients α is 0 … 1 (at least 2)", at_least_two)
    eval_batch_size: int = param(32, "sequences per forward pass", positive)
    eval_max_new_tokens: int = param(200, "greedy generation length for ROUGE-L", positive)
    eval_generate: bool = param(True, "generate answers (ROUGE-L, MU); False skips generation")
    device: str = param("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'", device_name)
    dtype: str = param("float32", "dtype of the evaluation (float32: in bf16 greedy generation depends on the decoding path)",
                       one_of("dtype", _names("dtype")))
    trust_remote_code: bool = param(False, "allow hub models with custom code")
    run_id: str = param("", "run folder name under outputs/<notebook>/; '' -> automatic")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), (list, tuple)) else v)
                for f in dataclasses.fields(self)}

    def methods(self, kind: str) -> list[str]:
        return []

    def data_path(self) -> str:
        return self.data_dir or os.environ.get(TOFU_DIR_ENV, "")

    def cross_checks(self) -> list[str]:
        """Checkpoints that cannot exist, and labels that do not match; empty ``before``/``after``
        are refused when the notebook runs (so that parameter files may leave them to the CLI)."""
        problems = [p for key in ("before", "retain_model") if getattr(self, key)
                    for p in model_problems(key, getattr(self, key))]
        problems += [p for a in self.after for p in model_problems("after", a)]
        if self.labels and (len(self.labels) != len(self.after) or len(set(self.labels)) != len(self.labels)):
            problems.append(f"'labels' = {self.labels}: give one distinct name per 'after' checkpoint ({len(self.after)})")
        return problems + self.checkpoint_problems() + self.data_problems()

    def checkpoint_problems(self) -> list[str]:
        """Local checkpoint folders hold weights (``after``: or a PEFT adapter of ``before``)."""
        problems = []
        for key, spec in [("before", self.before), ("retain_model", self.retain_model)] + [("after", a) for a in self.after]:
            folder = Path(spec).expanduser()
            if not spec or not folder.is_dir():
                continue  # a hub id (model_problems checked its form)
            if is_adapter(folder) and key != "after":
                problems.append(f"{key!r} = {spec!r} is a PEFT adapter folder: give it as an 'after' checkpoint (--after), "
                                "with its base model as 'before'")
            elif not is_adapter(folder) and not any((folder / name).is_file() for name in WEIGHTS):
                problems.append(f"{key!r} = {spec!r}: the folder holds no model weights ({', '.join(WEIGHTS)}) "
                                f"{'and no adapter (' + ADAPTER_CONFIG + ') ' if key == 'after' else ''}"
                                "; give the folder that save_pretrained wrote")
            elif key == "after" and self.before and (problem := adapter_base_problem(spec, self.before)):
                problems.append(problem)
        return problems

    def data_problems(self) -> list[str]:
        """A local TOFU folder exists and holds every file the evaluation reads (one per configuration)."""
        folder = self.data_path()
        if self.data != "tofu" or not folder:
            return []
        where = f"'data_dir' = {folder!r}" if self.data_dir else f"${TOFU_DIR_ENV} = {folder!r}"
        fix = (f"pass the TOFU folder with -p data_dir=<folder> (or set ${TOFU_DIR_ENV}), or data_dir='' to read {HUB_ID} "
               "from the hub")
        if not Path(folder).is_dir():
            return [f"{where}: no such folder; {fix}"]
        splits = ["full", f"{self.forget_split}_perturbed", FORGET_TO_RETAIN[self.forget_split], "retain_perturbed",
                  "real_authors_perturbed", "world_facts_perturbed", REFUSALS_SPLIT]
        missing = [f"{s}.jsonl" for s in splits if not any((Path(folder) / f"{s}{x}").is_file() for x in (".jsonl", ".json"))]
        if not missing:
            return []
        return [f"{where} lacks {', '.join(missing)} (TOFU keeps one <split>.jsonl per configuration of {HUB_ID}); {fix}"]
