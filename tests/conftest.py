"""Shared fixtures: tiny random models built from configs, tiny data, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.data.formatting import Encoded
from workbench.data.synthetic import random_token_examples
from workbench.models.tiny import random_model

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$WORKBENCH_SHARED_DATA`` or ``../shared/data`` next to the checkout."""
    return Path(os.environ.get("WORKBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set WORKBENCH_SHARED_DATA to run real-data tests)")
    return path


def make_tiny(model_type: str = "llama", *, vocab: int = 64, d_model: int = 32, d_ff: int = 64, layers: int = 2, seed: int = 0):
    """A tiny random causal LM of the given architecture (CPU, fp32, eval mode)."""
    return random_model(model_type, vocab=vocab, d_model=d_model, d_ff=d_ff, layers=layers, seed=seed)


@pytest.fixture
def tiny_llama_model():
    return make_tiny("llama")


def random_examples(n: int, *, vocab: int = 64, prompt: int = 4, answer: int = 6, seed: int = 0) -> list[Encoded]:
    """Random token sequences with a prompt part (labels −100) and an answer part; ids avoid pad 0."""
    return random_token_examples(n, vocab=vocab, prompt=prompt, answer=answer, seed=seed)
