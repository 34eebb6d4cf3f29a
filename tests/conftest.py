"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_model import write_tiny_gguf


# --- tiny random-weight models (see tests/tiny_model.py) -------------------------------------
# Two seeds give two different files, i.e. two "different models" as far as nczip's
# SHA-256-based model identity is concerned.


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny gemma3 GGUF (random weights, seed 0); loads in llama.cpp in milliseconds."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_model") / "tiny-seed0.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_gguf`` but seed 1: same architecture and vocabulary, different weights."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_model") / "tiny-seed1.gguf", seed=1)
