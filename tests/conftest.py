"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from hypothesis_budget import PROFILE
from tiny_model import write_tiny_gguf

# Property tests: the default profile is fast (each test's own count of examples); "thorough"
# (NCZIP_HYPOTHESIS=thorough) draws 20 times as many.
settings.register_profile("default", deadline=None)
settings.register_profile("thorough", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(PROFILE)


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


@pytest.fixture(scope="session")
def tiny_gguf_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_gguf`` (seed 0) with its output matrix in Q8_0: nczip's own head applies."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_model") / "tiny-seed0-q8.gguf", seed=0, q8_head=True)


# --- nczip objects on the tiny model -------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf):
    """A loaded LlamaCppModel on the tiny GGUF (1 thread)."""
    from nczip.models.llama_cpp import LlamaCppModel
    from nczip.models.registry import model_from_path

    model = LlamaCppModel(model_from_path(tiny_gguf), n_ctx=512, threads=1)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tiny_compressor(tiny_gguf):
    """A Compressor on the tiny GGUF with a 64-token window, so short inputs slide several times.

    Route "llm": the random-weight model loses to zstd on everything, and these tests are about
    the model's path (tests/test_routing.py covers the automatic route)."""
    from nczip.api import Compressor

    with Compressor(model=tiny_gguf, threads=1, window=64, route="llm") as compressor:
        yield compressor
