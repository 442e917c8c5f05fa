"""Parameters of ``notebooks/evaluate-checkpoints.ipynb``: the paper's evaluation of checkpoints
trained elsewhere (:func:`workbench.experiments.pair.evaluate_pair`).

Unlike the four experiments, nothing is trained here, so the config carries no training fields:
which checkpoints (``before``, ``after``, ``retain_model``), which data, how to evaluate. Built and
validated like every notebook config (:func:`workbench.runs.config.from_params`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.data.formatting import PROMPT_FORMATS
from workbench.data.tofu import FORGET_TO_RETAIN
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


@register_config(NOTEBOOK)
@dataclass(frozen=True)
class EvaluateCheckpointsConfig:
    """θ_before, the unlearned θ_after checkpoints (one curve each), θr for FQ, data and evaluation."""

    notebook: ClassVar[str] = NOTEBOOK
    method_kinds: ClassVar[tuple[str, ...]] = ()
    lr_kinds: ClassVar[tuple[str, ...]] = ()

    before: str = param("", "the model before unlearning: hub id or local folder")
    after: list[str] = param([], "unlearned checkpoints of 'before' (hub ids, local folders or PEFT/LoRA adapter folders); one curve each")
    labels: list[str] = param([], "one name per 'after' checkpoint (its method); [] -> the folder names")
    retain_model: str = param("", "θr, trained without the forget set: the reference of Forget Quality; '' -> FQ and MU95 left out")
    data: str = param("tofu", "TOFU or its synthetic miniature", one_of("dataset", lambda: ["synthetic-tofu", "tofu"]))
    data_dir: str = param("", "local TOFU folder; '' -> $WORKBENCH_TOFU_DIR, else the hub (locuslab/TOFU)")
    forget_split: str = param("forget10", "TOFU forget split", one_of("forget split", lambda: sorted(FORGET_TO_RETAIN)))
    n_retain_authors: int = param(0, "synthetic data: retain authors; TOFU: authors sampled (0: all)", non_negative)
    n_forget_authors: int = param(0, "synthetic data: forget authors; TOFU: the last n (0: all of the split)", non_negative)
    max_examples: int = param(0, "examples per evaluation split, drawn with 'seed' (0: all)", non_negative)
    seed: int = param(0, "seed of subsampling")
    prompt_format: str = param("workbench", "'workbench' (scores every answer token) or 'open-unlearning' (its exact tokenisation)",
                               one_of("prompt format", lambda: list(PROMPT_FORMATS)))
    use_chat_template: bool | None = param(None, "None: the tokenizer's chat template when it has one")
    es_floor: bool = param(False, "ES with open-unlearning's 1/|y| floor")
    n_alpha: int = param(21, "mixing coefficients α is 0 … 1 (at least 2)", at_least_two)
    eval_batch_size: int = param(32, "sequences per forward pass", positive)
    eval_max_new_tokens: int = param(200, "greedy generation length for ROUGE-L", positive)
    eval_generate: bool = param(True, "generate answers (ROUGE-L, MU); False skips generation")
    device: str = param("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'", device_name)
    dtype: str = param("float32", "model dtype", one_of("dtype", _names("dtype")))
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
        problems = [p for key in ("before", "retain_model") if getattr(self, key) for p in model_problems(key, getattr(self, key))]
        problems += [p for a in self.after for p in model_problems("after", a)]
        if self.labels and (len(self.labels) != len(self.after) or len(set(self.labels)) != len(self.labels)):
            problems.append(f"'labels' = {self.labels}: give one distinct name per 'after' checkpoint ({len(self.after)})")
        return problems
