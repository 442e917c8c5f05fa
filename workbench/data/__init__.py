"""Data sets as :class:`~workbench.data.schema.UnlearningData` bundles, by name.

Notebooks and parameter files name a data set as a string; :data:`DATASETS` maps the name to its
loader (TOFU and LUME from local files or the hub, or their synthetic miniatures generated from a
seed), and :func:`load_data` calls it; :func:`config_data` calls it with what a notebook's config says.
:func:`tokenizer_corpus` collects every text a model will see, so a tiny model's tokenizer can be
trained on exactly that.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench.data.lume import load_lume
from workbench.data.schema import QA, DataError, UnlearningData, subsample
from workbench.data.synthetic import synthetic_lume, synthetic_tofu
from workbench.data.tofu import HUB_ID, load_tofu

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


# A config's fields as each loader's arguments. The experiment notebooks' configs have no ``forget_split``
# (TOFU's forget10) or ``max_examples`` (no subsampling), evaluate-checkpoints' none of ``n_eval_*`` (TOFU's
# general splits whole); there a count of 0 means the loader's default (all authors, or the synthetic
# set's 8 retain and 2 forget authors).
CONFIG_ARGS: dict[str, Callable] = {
    "synthetic-tofu": lambda c: {"n_authors": (c.n_retain_authors or 8) + (c.n_forget_authors or 2),
                                 "n_forget_authors": c.n_forget_authors or 2, "seed": c.seed},
    "tofu": lambda c: {"source": c.data_path() or HUB_ID, "forget_split": getattr(c, "forget_split", "forget10"),
                       "n_retain_authors": c.n_retain_authors or None, "n_forget_authors": c.n_forget_authors or None,
                       "n_general": getattr(c, "n_eval_general", 0), "n_retain_eval": getattr(c, "n_eval_retain", 0),
                       "seed": c.seed},
    "synthetic-lume": lambda c: {"n_people": c.n_people, "forget_ratio": c.forget_ratio, "seed": c.seed},
    "lume": lambda c: {"folder": c.data_path(), "n_people": c.n_people, "forget_ratio": c.forget_ratio, "seed": c.seed},
}


def config_data(cfg) -> UnlearningData:
    """The data set a notebook's config names (``cfg.data``), loaded with the arguments its fields give
    (:data:`CONFIG_ARGS`), its evaluation splits subsampled to ``max_examples`` where the config has one."""
    if cfg.data == "lume" and not cfg.data_path():
        raise DataError("data='lume' needs a folder: set data_dir (or $WORKBENCH_LUME_DIR) to the folder with "
                        "task2_forget.jsonl and task2_retain.jsonl")
    data = load_data(cfg.data, **CONFIG_ARGS[cfg.data](cfg))
    return subsample(data, getattr(cfg, "max_examples", 0), cfg.seed)[0]


def _texts(ex: QA) -> list[str]:
    return [ex.question, ex.answer, *([ex.paraphrased_answer] if ex.paraphrased_answer else []), *ex.perturbed_answers]


def tokenizer_corpus(data: UnlearningData) -> list[str]:
    """Every question and answer (paraphrased, perturbed) of every split, plus the refusals."""
    return [text for examples in data.splits().values() for ex in examples for text in _texts(ex)] + list(data.refusals)


__all__ = ["DATASETS", "QA", "DataError", "UnlearningData", "config_data", "load_data", "subsample", "tokenizer_corpus"]
