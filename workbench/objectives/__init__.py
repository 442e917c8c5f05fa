"""Unlearning (and learning) objectives, one file each, registered by name (SPEC §3).

``ga``, ``wga``, ``npo``, ``dpo``, ``rmu``, ``l2_mlp`` and the learning loss ``nll``; see
:mod:`workbench.objectives.base` for what an objective declares. Every module of this package is
imported here, so a method added as a new file registers itself; a user's own objective in any
module registers with :func:`register` (notebooks import it through the ``plugins`` parameter).
"""

import importlib
import pkgutil

from workbench.likelihood import (
    answer_nll,
    forward_logits,
    mean_nll,
    sequence_logprob,
    token_logprobs,
)
from workbench.objectives.base import (
    OBJECTIVES,
    Objective,
    ObjectiveContext,
    make,
    objective_class,
    register,
    total_loss,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "make", "objective_class", "register", "total_loss",
           "answer_nll", "forward_logits", "mean_nll", "sequence_logprob", "token_logprobs"]
