"""Localizers, one file each, registered by name (SPEC §4): which value vectors hold the forget knowledge?

``random`` (the baseline), ``activations`` (Chang et al. 2024), ``memflex`` (Tian et al. 2024),
``wagle`` and ``wagle_weights`` (Jia et al. 2024); :mod:`~workbench.localizers.accuracy` scores a
localizer against a known region. See :mod:`workbench.localizers.base` for what a localizer
declares. Every module of this package is imported here, so a method added as a new file registers
itself; a user's own localizer registers with :func:`register` (notebooks import it through the
``plugins`` parameter).
"""

from workbench.localizers.accuracy import auroc, average_ranks, localization_accuracy
from workbench.localizers.base import (
    LOCALIZERS,
    Localization,
    Localizer,
    localize,
    localizer_class,
    make,
    register,
    score,
    to_region,
)
from workbench.registry import import_all

import_all(__name__, __path__)

__all__ = ["LOCALIZERS", "Localization", "Localizer", "auroc", "average_ranks", "localization_accuracy", "localize",
           "localizer_class", "make", "register", "score", "to_region"]
