"""Archives made with the default model from real text (tests/golden/), committed: they decode on
every machine, never skipping (the engine's arithmetic is nczip's own), and compressing their
inputs again gives them byte for byte. Forced onto the portable C loops, the engine codes the
same archive as with its SIMD kernels; with 1 and 2 threads and with 16 lanes, too.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nczip import container
from nczip.api import Compressor

HERE = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(HERE))
import inputs as golden  # noqa: E402

MANIFEST = json.loads((HERE / "manifest.json").read_text())
pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def compressor():
    with Compressor() as c:
        yield c


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_archive_decodes(compressor, name):
    """No input needed: the archive carries its original's size and SHA-256, and decompress
    checks both."""
    archive = (HERE / f"{name}.ncz").read_bytes()
    assert hashlib.sha256(archive).hexdigest() == MANIFEST[name]["archive_sha256"]
    data = compressor.decompress(archive)
    assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["input_sha256"]


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_input_compresses_to_its_archive(compressor, name):
    data = golden.INPUTS[name]()
    assert hashlib.sha256(data).hexdigest() == MANIFEST[name]["input_sha256"]
    archive = compressor.compress(data)
    assert [s.method.name for s in container.read_archive(archive).segments] == MANIFEST[name]["methods"]
    assert archive == (HERE / f"{name}.ncz").read_bytes()


def test_mixed_golden_has_text_and_binary_segments():
    methods = MANIFEST["mixed"]["methods"]
    assert "LLM" in methods and set(methods) - {"LLM"}


def _compress_in_process(data: bytes, env: dict, *args: str) -> bytes:
    return subprocess.run([sys.executable, "-m", "nczip", "-c", *args], input=data, capture_output=True, check=True,
                          env={**os.environ, **env}).stdout


def test_portable_loops_code_the_archive_the_simd_kernels_do():
    data = golden.alice29_20k()[:1_500]
    simd = _compress_in_process(data, {})
    portable = _compress_in_process(data, {"NCZIP_KERNEL": "portable"})
    avx2 = _compress_in_process(data, {"NCZIP_KERNEL": "avx2"})
    assert portable == simd == avx2


def test_threads_and_lanes_change_no_bit():
    """16 lanes of 64 tokens (the lockstep decoder reads what the encoder's prefill wrote) with 1
    and 2 threads."""
    data = golden.enwik8_20k()[:5_000]
    options = dict(lanes=16, lane_tokens=64, primer=32)
    with Compressor(threads=1, **options) as one, Compressor(threads=2, **options) as two:
        archive = one.compress(data)
        assert len(container.read_archive(archive).segments) == 1
        assert two.compress(data) == archive
        assert two.decompress(archive) == data
