"""Parameters of ``notebooks/localizer-recovery.ipynb`` (beyond the paper): when can a localizer find
knowledge planted in a known region? (:func:`workbench.experiments.recovery.localizer_recovery`)

Every (region fraction, target seed, injection strength) gives its own θo; each localizer, run on it,
is scored against the planted ``V_tgt``. Nothing is unlearned, so there are no learning rates; the
localizers' own hyper-parameters are generated from their registry as in every notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from workbench.runs.config import InjectionConfig, register_config
from workbench.runs.methods import _names, used_in
from workbench.runs.params import fraction, non_empty, one_of, param, positive

NOTEBOOK = "localizer-recovery"


def _each(check):
    """A per-element check for list parameters: the first element that fails names the problem."""
    def run(key, values):
        return next((p for v in values if (p := check(key, v))), None)
    return run


@register_config(NOTEBOOK)
@dataclass(frozen=True)
class LocalizerRecoveryConfig(InjectionConfig):
    """θr, then per region fraction × target seed × injection strength a θo, and every localizer scored on it."""

    method_kinds: ClassVar[tuple[str, ...]] = ("localizer",)
    lr_kinds: ClassVar[tuple[str, ...]] = ()

    localizers: list[str] = param(used_in("localizer", "table1"), "localizers scored on each θo against V_tgt",
                                  non_empty, one_of("localizer", _names("localizer")))
    region_seeds: list[int] = param([7], "seeds of the target region V_tgt (one θo per seed, fraction and strength)",
                                    non_empty)
    region_fractions: list[float] = param([0.1], "sizes of V_tgt as a share of all value vectors (p)", non_empty,
                                          _each(fraction))
    injection_epochs: list[int] = param([10], "injection strengths: epochs of forget injection, weakest first "
                                        "(each gives its own θo; 'inject_epochs' is not used)", non_empty,
                                        _each(positive))
    check_fs: bool = param(False, "unused here: nothing is unlearned")

    def methods(self, kind: str) -> list[str]:
        return list(self.localizers) if kind == "localizer" else []

    def cross_checks(self) -> list[str]:
        # one region at a time: 2p <= 1 (InjectionConfig's Oracle + Random rule) does not apply
        return super(InjectionConfig, self).cross_checks()
