"""The torch backend on the default model (Gemma-3-270M's GGUF through transformers), on short
inputs: two separate processes, one compressing and one decompressing, and the archive's size
next to llama.cpp's. Marked real_model; skipped where torch or transformers is not installed.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from nczip import container  # noqa: E402

pytestmark = pytest.mark.real_model

TEXT = (
    b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    b"nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    b"no pictures or conversations in it, 'and what is the use of a book,' thought Alice 'without "
    b"pictures or conversations?'\r\nSo she was considering in her own mind \xe2\x80\x94 caf\xc3\xa9, "
    b"na\xc3\xafve \xe6\x9d\xb1\xe4\xba\xac \xff\x00 end.\n"
)


def nczip(*args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run([sys.executable, "-m", "nczip", *args], input=stdin, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_torch_archive_decodes_in_another_process_and_costs_what_llama_cpp_does(tmp_path):
    source = tmp_path / "alice.txt"
    source.write_bytes(TEXT)
    torch_archive = nczip("compress", "-c", "-q", "--backend", "torch", "--device", "cpu", "--threads", "2",
                          "--route", "llm", str(source))
    header, _ = container.read_header(torch_archive)
    assert header.backend == "torch-cpu-f32-t2"
    packed = tmp_path / "alice.txt.ncz"
    packed.write_bytes(torch_archive)
    # a second process, told nothing about the backend or threads: the archive says
    assert nczip("decompress", "-c", "-q", "--threads", "1", str(packed)) == TEXT
    llama_archive = nczip("compress", "-c", "-q", "--route", "llm", str(source))
    torch_payload = len(container.read_archive(torch_archive).segments[0].payload)
    llama_payload = len(container.read_archive(llama_archive).segments[0].payload)
    # float32 on dequantized weights against llama.cpp's quantized kernels: the same model, so
    # within a few percent on a short text (bench/backends.py measures 20 KB)
    assert abs(torch_payload - llama_payload) <= 0.03 * llama_payload + 4, (torch_payload, llama_payload)
