"""Coverage-guided fuzzing of the container parser with atheris (libFuzzer for Python).

    pip install atheris
    python tests/fuzz/fuzz_container.py -runs=100000 [-max_len=4096] [CORPUS_DIR]

Every input must either parse or raise an NczipError (FormatError, TruncatedError, ...): any
other exception, a hang or a crash is a bug. What parses must survive the rest of the reading
API, and write back to the same bytes (the format has one encoding per archive). With a corpus
directory, the fuzzer saves interesting inputs there; without one, it starts from the seeds
below, valid archives of every segment method. The suite's hypothesis tests (test_container.py)
cover the same ground at a smaller scale on every run.
"""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from nczip import container
    from nczip.container import Archive, Header, Method, Segment
    from nczip.errors import NczipError


def seeds() -> list[bytes]:
    """Small valid archives: empty, STORED, ZSTD and LLM segments, with and without params."""
    def archive(segments: list[Segment], params: dict[str, int]) -> bytes:
        size = sum(s.original_size for s in segments)
        header = Header("llama.cpp", "m.gguf", hashlib.sha256(b"m").digest(), size, hashlib.sha256(b"x").digest(), params)
        return container.write_archive(Archive(header, tuple(segments)))

    return [
        archive([], {}),
        archive([Segment(Method.STORED, 3, 0, b"abc")], {"window": 64}),
        archive([Segment(Method.LLM, 10, 4, b"\x01\x02\x03"), Segment(Method.ZSTD, 5, 0, b"zz")], {"cdf_bits": 31, "keep": 2}),
    ]


def check(data: bytes) -> None:
    try:
        archive = container.read_archive(data)
    except NczipError:
        # A damaged archive must still fail cleanly on the other entry points.
        for reader in (container.read_header, container.damaged_segments):
            try:
                reader(data)
            except NczipError:
                pass
        container.is_archive(data[:16])
        return
    assert container.write_archive(archive) == data, "parsed archive does not write back to its bytes"
    assert container.damaged_segments(data) == []
    header, entries = container.read_prefix(io.BytesIO(data))
    assert header == archive.header and len(entries) == len(archive.segments)


def main() -> None:
    for seed in seeds():
        check(seed)
    argv = list(sys.argv)
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    if corpus and not any(Path(c).iterdir() for c in corpus if Path(c).is_dir()):
        for i, seed in enumerate(seeds()):
            (Path(corpus[0]) / f"seed{i}").write_bytes(seed)
    atheris.Setup(argv, lambda data: check(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
