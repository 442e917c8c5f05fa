"""Parameters of the five experiment notebooks: one dataclass each, on a common base.

:class:`Config` holds what every experiment shares (data, model, device, base training,
evaluation, run); :class:`InjectionConfig` adds the controlled setting of §4 (knowledge injected
into a target region of θr gives θo) and :class:`ControlledConfig` its Oracle-vs-Random regions.
Each notebook's class is registered under the notebook's name (:func:`workbench.runs.params.register_config`);
:mod:`workbench.runs.config` adds the methods' fields and builds and validates them.
``notebooks/evaluate-checkpoints.ipynb``, which trains nothing, has its own: :mod:`workbench.runs.evaluate_config`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from workbench import objectives as obj
from workbench.runs.methods import _names, method_params, used_in
from workbench.runs.params import (
    at_least_two,
    device_name,
    each,
    fraction,
    model_problems,
    non_empty,
    non_negative,
    one_of,
    param,
    positive,
    register_config,
    unit_interval,
)


@dataclass(frozen=True)
class Config:
    """Parameters shared by every notebook: data, model, device, base training, evaluation, run."""

    notebook: ClassVar[str] = ""
    # Which registries give this notebook hyper-parameters, and which give it learning rates.
    method_kinds: ClassVar[tuple[str, ...]] = ()
    lr_kinds: ClassVar[tuple[str, ...]] = ()

    plugins: list[str] = param([], "modules or .py files that register your own objectives/localizers (imported first)")
    data: str = param("synthetic-tofu", "data set name", one_of("dataset", _names("dataset")))
    data_dir: str = param("", "local data folder; '' -> $WORKBENCH_TOFU_DIR / $WORKBENCH_LUME_DIR")
    n_retain_authors: int = param(16, "authors (or people) kept in the retain set", positive)
    n_forget_authors: int = param(2, "authors in the forget set", positive)
    n_eval_general: int = param(0, "TOFU: real_authors and world_facts questions evaluated, each a seeded draw "
                                   "(0 -> all, as the paper)", non_negative)
    n_eval_retain: int = param(0, "TOFU: retain_eval questions evaluated per retain author, a seeded draw "
                                  "(0 -> all 20, as the paper)", non_negative)
    model: str = param("tiny-llama", "'tiny-llama', 'smollm2', a hub id or a local path")
    model_revision: str = param("", "hub revision (branch, tag or commit) of 'model'; '' -> the default branch")
    retain_model: str = param("", "θr trained elsewhere (hub id or local folder), used instead of fine-tuning θp on the "
                                  "retain set here; '' -> fine-tune here")
    retain_revision: str = param("", "hub revision of 'retain_model'")
    tiny_layers: int = param(4, "tiny LLaMA: decoder layers", positive)
    tiny_d_model: int = param(64, "tiny LLaMA: hidden size", positive)
    tiny_d_ff: int = param(256, "tiny LLaMA: MLP width (value vectors per layer)", positive)
    vocab_size: int = param(2048, "tiny LLaMA: BPE vocabulary size", positive)
    device: str = param("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'", device_name)
    dtype: str = param("float32", "model dtype", one_of("dtype", _names("dtype")))
    eval_dtype: str = param("", "dtype of the mixing sweeps and of θr's reference truth ratios; '' -> 'dtype'. bf16 greedy "
                                "generation depends on the decoding path: the paper files sweep in float32",
                            one_of("dtype", lambda: ["", *_names("dtype")()]))
    seed: int = param(0, "seed of data sampling, model init, training order and seeded methods")
    pretrain_epochs: int = param(3, "tiny model: epochs of pre-training into θp", non_negative)
    pretrain_lr: float = param(1e-3, "tiny model: pre-training learning rate", positive)
    retain_epochs: int = param(5, "epochs of fine-tuning on the retain set (θr)", positive)
    retain_lr: float = param(1e-3, "learning rate of fine-tuning on the retain set", positive)
    replay_pretrain: bool = param(True, "[choice] mix θp's general-knowledge set into θr/θ_full fine-tuning (tiny models "
                                        "forget it otherwise, leaving MU nothing to measure)")
    batch_size: int = param(16, "batch size of every training stage", positive)
    weight_decay: float = param(0.01, "AdamW weight decay", non_negative)
    max_grad_norm: float = param(1.0, "gradient clipping norm (0 disables)", non_negative)
    gradient_checkpointing: bool = param(False, "recompute activations in the backward pass: less memory, about 1/3 more "
                                                "compute, same results")
    unlearn_epochs: int = param(5, "epochs of unlearning", positive)
    eval_max_new_tokens: int = param(200, "greedy generation length for ROUGE-L (the paper: 200; EOS stops each answer)",
                                     positive)
    eval_generate: bool = param(True, "generate answers (ROUGE-L); False skips generation")
    eval_batch_size: int = param(32, "prompts evaluated at once; 0 -> the largest that fits the GPU's memory (32 on a CPU)",
                                 non_negative)
    n_alpha: int = param(21, "mixing coefficients α = 0 … 1 (at least 2)", at_least_two)
    n_rounds: int = param(10000, "permutation / bootstrap rounds of the significance tests", positive)
    trust_remote_code: bool = param(False, "allow hub models with custom code")
    run_id: str = param("", "run folder name under outputs/<notebook>/; '' -> automatic")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def lr_for(self, name: str) -> float:
        """Learning rate of unlearning with an objective or in a localizer's regions (``lr_<name>``)."""
        return getattr(self, f"lr_{name}")

    def methods(self, kind: str) -> list[str]:
        """The registered methods of ``kind`` this run uses (objectives trained, localizers run)."""
        return []

    def data_path(self) -> str:
        """``data_dir``, or the data set's environment variable when it is empty (read now, not at import)."""
        env = DATA_DIR_ENV.get(self.data)
        return self.data_dir or (os.environ.get(env, "") if env else "")

    def cross_checks(self) -> list[str]:
        """Checks that involve several fields; subclasses extend the list."""
        problems = model_problems("model", self.model)
        if self.model == "tiny-llama":  # the depth is known before anything is built
            for name in self.methods("objective"):
                problems += obj.make(name, **method_params(self, "objective", name)).check_depth(self.tiny_layers)
        return problems


DATA_DIR_ENV = {"tofu": "WORKBENCH_TOFU_DIR", "lume": "WORKBENCH_LUME_DIR"}
def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class InjectionConfig(Config):
    """The controlled setting of §4: knowledge injected into a target region of θr gives θo."""

    method_kinds: ClassVar[tuple[str, ...]] = ("objective",)
    lr_kinds: ClassVar[tuple[str, ...]] = ("objective",)

    region_fraction: float = param(0.1, "p: share of all value vectors in a region", fraction)
    inject_lr: float = param(3e-3, "learning rate of forget injection (θr -> θo)", positive)
    inject_epochs: int = param(10, "epochs of forget injection", positive)
    lambda_retain: float = param(2.0, "weight of NLL(retain) during injection", non_negative)
    inject_general: bool = param(False, "[choice] the injection's retain term also covers θp's general-knowledge set "
                                 "(a small θo otherwise loses it: MU starts low and rises as it unlearns); its ES is checked too")
    min_forget_es: float = param(0.8, "injection must reach this mean forget ES", unit_interval)
    max_retain_es_drop: float = param(0.05, "injection may lower retain ES by at most this", unit_interval)
    check_fs: bool = param(True, "check that FS at α=1 approaches but does not reach 1")

    def methods(self, kind: str) -> list[str]:
        return list(self.objectives) if kind == "objective" else []

    def cross_checks(self) -> list[str]:
        # V_rdm is drawn outside V_tgt, so two disjoint regions of p each must fit.
        problems = super().cross_checks()
        if 2 * self.region_fraction > 1:
            problems.append(f"'region_fraction' = {self.region_fraction}: disjoint Oracle and Random regions need 2p <= 1")
        return problems


RANDOM_SEED_STRIDE = 1000  # Random region j of target seed s is drawn with seed 1000·s + j


@dataclass(frozen=True)
class ControlledConfig(InjectionConfig):
    """Oracle vs Random over several target seeds, each with its own θo (Tables 2 and 6)."""

    random_per_seed: int = param(2, "Random regions per target seed, drawn outside V_tgt (seeds 1000·seed+1, +2, …); "
                                    "two or more give Random–Random pairs that share θo (the calibrated p's baseline)", positive)

    def random_seeds_for(self, seed: int) -> list[int]:
        """Seeds of the Random regions of target seed ``seed``: ``1000·seed + j``, j = 1 … random_per_seed
        **[choice]**: readable (7001 is θo 7's first) and checked to differ from every other region seed."""
        return [RANDOM_SEED_STRIDE * seed + j for j in range(1, self.random_per_seed + 1)]

    def cross_checks(self) -> list[str]:
        problems = super().cross_checks()
        drawn = [s for seed in self.region_seeds for s in self.random_seeds_for(seed)]
        clashes = sorted((set(drawn) & set(self.region_seeds)) | {s for s in drawn if drawn.count(s) > 1})
        if self.random_per_seed >= RANDOM_SEED_STRIDE or clashes:
            problems.append(f"'random_per_seed' = {self.random_per_seed} with 'region_seeds' = {self.region_seeds}: "
                            f"Random region seeds {clashes} collide with other region seeds; use fewer Random "
                            f"regions (< {RANDOM_SEED_STRIDE}) or other target seeds")
        return problems


@register_config("oracle-vs-random")
@dataclass(frozen=True)
class OracleVsRandomConfig(ControlledConfig):
    method_kinds: ClassVar[tuple[str, ...]] = ("objective", "localizer")

    region_seeds: list[int] = param([7, 19, 31, 47, 99], "seeds of the target region V_tgt", non_empty)
    objectives: list[str] = param(used_in("objective", "table2"), "unlearning objectives", non_empty,
                                  one_of("objective", _names("objective")))
    localizers: list[str] = param(used_in("localizer", "table1"), "localizers scored on θo against V_tgt",
                                  one_of("localizer", _names("localizer")))


@register_config("l2-mlp-supervision")
@dataclass(frozen=True)
class L2MlpConfig(InjectionConfig):
    objectives: list[str] = param(used_in("objective", "figure1"), "supervision objectives (paper: the L2 MLP loss)",
                                  non_empty, one_of("objective", _names("objective")))
    oracle_seeds: list[int] = param([7], "seeds of the Oracle region V_tgt, one θo each (the paper: one)", non_empty)
    random_seeds: list[int] = param([7, 11, 49], "seeds of the Random regions (A, B, C), drawn outside each V_tgt",
                                    non_empty)
    retain_l2_weight: float = param(2.0, "weight of the objective's retain term (paper's α = 2)", non_negative)


@register_config("localizer-recovery")
@dataclass(frozen=True)
class LocalizerRecoveryConfig(InjectionConfig):
    """Beyond the paper: per region fraction × target seed × injection strength a θo, each localizer scored on it
    against V_tgt (:mod:`workbench.experiments.recovery`). Nothing is unlearned: no learning rates."""

    method_kinds: ClassVar[tuple[str, ...]] = ("localizer",)
    lr_kinds: ClassVar[tuple[str, ...]] = ()
    localizers: list[str] = param(used_in("localizer", "table1"), "localizers scored on each θo against V_tgt",
                                  non_empty, one_of("localizer", _names("localizer")))
    region_seeds: list[int] = param([7], "seeds of the target region V_tgt (one θo per seed, fraction, strength)", non_empty)
    region_fractions: list[float] = param([0.1], "sizes of V_tgt, shares of all value vectors", non_empty, each(fraction))
    injection_epochs: list[int] = param([10], "injection strengths: epochs of forget injection, each its own θo "
                                        "('inject_epochs' is not used)", non_empty, each(positive))
    check_fs: bool = param(False, "unused here: nothing is unlearned")

    def methods(self, kind: str) -> list[str]:
        return list(self.localizers) if kind == "localizer" else []

    def cross_checks(self) -> list[str]:  # one region at a time: the Oracle + Random rule 2p <= 1 does not apply
        return Config.cross_checks(self)


@register_config("lume")
@dataclass(frozen=True)
class LumeConfig(ControlledConfig):
    data: str = param("synthetic-lume", "data set name", one_of("dataset", _names("dataset")))
    n_people: int = param(60, "people sampled from LUME Task 2 (or generated)", positive)
    forget_ratio: float = param(0.1, "share of people in the forget set", fraction)
    region_seeds: list[int] = param([7, 19, 31], "seeds of the target region V_tgt", non_empty)
    objectives: list[str] = param(used_in("objective", "table6"), "unlearning objectives", non_empty,
                                  one_of("objective", _names("objective")))


@register_config("revisit-localizers")
@dataclass(frozen=True)
class RevisitLocalizersConfig(Config):
    method_kinds: ClassVar[tuple[str, ...]] = ("objective", "localizer")
    lr_kinds: ClassVar[tuple[str, ...]] = ("localizer",)

    region_fraction: float = param(0.1, "share of value vectors each localizer selects", fraction)
    localizers: list[str] = param(used_in("localizer", "table1"), "localizers compared with Random", non_empty,
                                  one_of("localizer", _names("localizer")))
    random_seeds: list[int] = param([0, 1, 2], "seeds of the Random regions", non_empty)
    objective: str = param(used_in("objective", "table1")[0], "unlearning objective",
                           one_of("objective", _names("objective")))
    full_lr: float = param(1e-3, "learning rate of fine-tuning θp on the full set (target model)", positive)
    full_epochs: int = param(5, "epochs of fine-tuning on the full set", positive)
    full_model: str = param("", "θ_full trained elsewhere (hub id or local folder), used instead of fine-tuning θp on the "
                                "full set here; '' -> fine-tune here")
    full_revision: str = param("", "hub revision of 'full_model'")
    weight_level: bool = param(False, "also run a weight-level localizer vs random weights (Table 5)")
    weight_localizer: str = param(used_in("localizer", "table5")[0], "weight-level localizer (Table 5)",
                                  one_of("weight localizer", _names("weight localizer")))
    weight_fraction: float = param(0.8, "share of down-projection weights in weight-level regions", fraction)
    lr_weight_level: float = param(1e-3, "unlearning learning rate of the weight-level variant", positive)
    check_fs: bool = param(True, "check that FS at α=1 approaches but does not reach 1")

    def methods(self, kind: str) -> list[str]:
        return [self.objective] if kind == "objective" else list(self.localizers)
