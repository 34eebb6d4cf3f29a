"""Coverage-guided fuzzing of the container parser with atheris (libFuzzer for Python).

    pip install atheris
    python tests/fuzz/fuzz_container.py -runs=100000 [-max_len=4096] [CORPUS_DIR]

Every input must either parse or raise an NczipError (FormatError, TruncatedError, ...): any
other exception, a hang or a crash is a bug. What parses must survive the rest of the reading
API, and write back to the same bytes (the format has one encoding per archive; the general form of one
LLM segment, written before LLM_SINGLE, writes back in that form, and an archive that the COMPACT
form can hold writes back in it). With a corpus
directory, the fuzzer saves interesting inputs there; without one, it starts from the seeds
below, valid archives of every segment method. The suite's hypothesis tests (test_container.py)
cover the same ground at a smaller scale on every run.
"""
from __future__ import annotations

import hashlib
import io
import sys
import zlib
from pathlib import Path

import atheris

with atheris.instrument_imports(enable_loader_override=False):
    from nczip import container
    from nczip.container import Archive, Header, Method, Segment
    from nczip.errors import NczipError


def seeds() -> list[bytes]:
    """Small valid archives: empty, STORED, ZSTD, LZMA and LLM segments, with and without
    params, in the general, the SINGLE, the LLM_SINGLE and the COMPACT form, and one LLM segment
    in the general form as nczip wrote it before LLM_SINGLE."""
    def archive(segments: list[Segment], params: dict[str, int]) -> bytes:
        size = sum(s.original_size for s in segments)
        header = Header("llama.cpp", "m.gguf", hashlib.sha256(b"m").digest(), size, hashlib.sha256(b"x").digest(), params)
        return container.write_archive(Archive(header, tuple(segments)))

    def plain(segments: list[Segment]) -> bytes:  # no model: the SINGLE form
        size = sum(s.original_size for s in segments)
        header = Header("", "", bytes(32), size, hashlib.sha256(b"x").digest(), {})
        return container.write_archive(Archive(header, tuple(segments)))

    return [
        plain([]),
        plain([Segment(Method.LZMA, 7, 0, b"\x00\x01\x02")]),
        plain([Segment(Method.ZSTD, 300, 0, b"(\xb5/\xfd")]),
        archive([], {}),
        archive([Segment(Method.STORED, 3, 0, b"abc")], {"window": 64}),
        archive([Segment(Method.LLM, 10, 4, b"\x01\x02\x03"), Segment(Method.ZSTD, 5, 0, b"zz")], {"cdf_bits": 31, "keep": 2}),
        archive([Segment(Method.LLM, 12, 5, b"\x12\x34\x56")], {"temp_milli": -1, "window": 4096}),  # LLM_SINGLE
        general_form_of_one_llm_segment(),
        compact(12, 5, b"\x12\x34\x56", 6),
        compact(20_000, 5576, bytes(range(256)) * 3, 9),
    ]


def compact(size: int, tokens: int, payload: bytes, preset: int) -> bytes:
    """The COMPACT form: the default model, a level preset."""
    from nczip.models.registry import KNOWN_MODELS

    model = KNOWN_MODELS[0]
    header = Header(model.backend, model.name, model.sha256, size, hashlib.sha256(b"x").digest()[:8],
                    {"codec": container.COMPACT_PRESET_BASE + preset, "n_vocab": model.n_vocab})
    return container.write_archive(Archive(header, (Segment(Method.LLM, size, tokens, payload),)))


def general_form_of_one_llm_segment() -> bytes:
    """One LLM segment in the general form, as written before LLM_SINGLE (the writer no longer
    makes it): struct, from docs/format.md."""
    payload = b"\x12\x34\x56"
    body = b"\x09llama.cpp" + (6).to_bytes(2, "little") + b"m.gguf" + hashlib.sha256(b"m").digest()
    body += (12).to_bytes(8, "little") + hashlib.sha256(b"x").digest() + (1).to_bytes(2, "little")
    body += b"\x06window" + (4096).to_bytes(8, "little", signed=True)
    head = container.MAGIC + (1).to_bytes(2, "little") + bytes(2) + len(body).to_bytes(4, "little") + body
    table = (1).to_bytes(4, "little") + bytes([1]) + (12).to_bytes(8, "little") + (5).to_bytes(8, "little")
    table += len(payload).to_bytes(8, "little") + zlib.crc32(payload).to_bytes(4, "little")
    return head + zlib.crc32(head).to_bytes(4, "little") + table + zlib.crc32(table).to_bytes(4, "little") + payload


def with_fixed_crcs(data: bytes) -> bytes:
    """The input with its header, table and payload CRC-32s made right, as far as its lengths
    allow: mutations then reach the parser's checks behind the CRCs instead of dying at them."""
    out = bytearray(data)
    if container.is_compact(out) and len(out) >= 8:  # one CRC-32 at the end, over all before it
        out[-4:] = zlib.crc32(out[:-4]).to_bytes(4, "little")
        return bytes(out)
    if len(out) < 12:
        return bytes(out)
    body = int.from_bytes(out[8:12], "little")
    crc_at = 12 + body
    if crc_at + 4 > len(out):
        return bytes(out)
    out[crc_at : crc_at + 4] = zlib.crc32(out[:crc_at]).to_bytes(4, "little")
    if int.from_bytes(out[6:8], "little") & (container.FLAG_SINGLE | container.FLAG_LLM_SINGLE):
        return bytes(out)  # no segment table: the payload follows the header CRC
    table = crc_at + 4
    if table + 4 > len(out):
        return bytes(out)
    count = min(int.from_bytes(out[table : table + 4], "little"), (len(out) - table) // 29)
    records = table + 4
    table_crc_at = records + 29 * count
    if table_crc_at + 4 > len(out):
        return bytes(out)
    payload = table_crc_at + 4
    for i in range(count):  # payload CRCs first: they are inside the records the table CRC covers
        record = records + 29 * i
        size = int.from_bytes(out[record + 17 : record + 25], "little")
        if payload + size > len(out):
            break
        out[record + 25 : record + 29] = zlib.crc32(out[payload : payload + size]).to_bytes(4, "little")
        payload += size
    out[table_crc_at : table_crc_at + 4] = zlib.crc32(out[table:table_crc_at]).to_bytes(4, "little")
    return bytes(out)


def one_input(data: bytes) -> None:
    """The first byte chooses: odd, fix the CRCs first (deep); even, take the bytes as they are."""
    if data and data[0] & 1:
        check(with_fixed_crcs(data[1:]))
    else:
        check(data[1:])


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
    written = container.write_archive(archive)
    flags = int.from_bytes(data[6:8], "little")
    if container.is_compact(written) and not container.is_compact(data):
        # An archive that the COMPACT form can hold (a known model, a level preset) writes back in
        # it, with the first 8 bytes of the original's SHA-256.
        back = container.read_archive(written)
        assert back.segments == archive.segments
        assert back.header.original_sha256 == archive.header.original_sha256[:8]
    elif flags == 0 and [s.method for s in archive.segments] == [Method.LLM]:
        # The general form of one LLM segment, as written before LLM_SINGLE: it writes back in LLM_SINGLE.
        assert int.from_bytes(written[6:8], "little") == container.FLAG_LLM_SINGLE
        assert container.read_archive(written) == archive
    else:
        assert written == data, "parsed archive does not write back to its bytes"
    assert container.damaged_segments(data) == []
    header, entries, _ = container.read_prefix(io.BytesIO(data))
    assert header == archive.header and len(entries) == len(archive.segments)


def main() -> None:
    for seed in seeds():
        check(seed)
        assert with_fixed_crcs(seed) == seed
    argv = list(sys.argv)
    corpus = [Path(a) for a in argv[1:] if not a.startswith("-")]
    if corpus and corpus[0].is_dir() and not any(corpus[0].iterdir()):
        for i, seed in enumerate(seeds()):
            (corpus[0] / f"seed{i}").write_bytes(b"\x00" + seed)
            (corpus[0] / f"seed{i}-fixed").write_bytes(b"\x01" + seed)
    atheris.Setup(argv, lambda data: one_input(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
