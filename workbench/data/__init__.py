"""Data sets as :class:`~workbench.data.schema.UnlearningData` bundles, by name.

Notebooks and parameter files name a data set as a string; :data:`DATASETS` maps the name to its
loader (TOFU and LUME from local files or the hub, or their synthetic miniatures generated from a
seed), and :func:`load_data` calls it. :func:`tokenizer_corpus` collects every text a model will see,
so a tiny model's tokenizer can be trained on exactly that.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench.data.lume import load_lume
from workbench.data.schema import QA, DataError, UnlearningData
from workbench.data.synthetic import synthetic_lume, synthetic_tofu
from workbench.data.tofu import load_tofu

DATASETS: dict[str, Callable[..., UnlearningData]] = {
    "synthetic-tofu": synthetic_tofu,
    "synthetic-lume": synthetic_lume,
    "tofu": load_tofu,
    "lume": load_lume,
}


def load_data(name: str, **kwargs) -> UnlearningData:
    """Load the data set registered as ``name`` (keyword arguments go to its loader).

    ``tofu`` needs ``source=`` (a folder or ``"locuslab/TOFU"``), ``lume`` needs ``folder=``.
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}") from None
    return loader(**kwargs)


def _texts(ex: QA) -> list[str]:
    return [ex.question, ex.answer, *([ex.paraphrased_answer] if ex.paraphrased_answer else []), *ex.perturbed_answers]


def tokenizer_corpus(data: UnlearningData) -> list[str]:
    """Every question and answer (paraphrased, perturbed) of every split, plus the refusals."""
    return [text for examples in data.splits().values() for ex in examples for text in _texts(ex)] + list(data.refusals)


__all__ = ["DATASETS", "QA", "DataError", "UnlearningData", "load_data", "tokenizer_corpus"]
