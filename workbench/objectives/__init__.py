"""Unlearning (and learning) objectives, one file each, registered by name (SPEC §3).

``ga``, ``wga``, ``npo``, ``dpo``, ``rmu``, ``l2_mlp`` and the learning loss ``nll``; see
:mod:`workbench.objectives.base` for what an objective declares. Every module of this package is
imported here, so a method added as a new file registers itself; a user's own objective in any
module registers with :func:`register` (notebooks import it through the ``plugins`` parameter).
"""

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
from workbench.registry import import_all

import_all(__name__, __path__)

__all__ = ["OBJECTIVES", "Objective", "ObjectiveContext", "make", "objective_class", "register", "total_loss",
           "answer_nll", "forward_logits", "mean_nll", "sequence_logprob", "token_logprobs"]
