"""loc-unlearn workbench: localized knowledge unlearning, reproduced and examined.

Reproduces Lee et al. (2025), "Does Localization Inform Unlearning? A Rigorous Examination of
Local Parameter Attribution for Knowledge Unlearning in Language Models". The modules follow the
way data flows through an experiment:

    data, models → regions, delta/training → objectives, localizers → metrics, evaluation, mixing
    → curves, stats → runs (outputs, cache, CLI) → plots, widgets → notebooks
"""

__version__ = "0.1.0"
