"""Any input, never worse than zstd or lzma: the route (route.py), the binary codecs (binary.py)
and how the pipeline combines them with the LLM (pipeline.py)."""
from __future__ import annotations

import hashlib
import lzma
import os
import random
import struct
import threading
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from corpora.samples import edge_cases
from nczip import binary, container, pipeline, route
from nczip.api import Compressor
from nczip.container import Method
from nczip.errors import CorruptSegmentError

CORPORA = Path(os.environ.get("NCZIP_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))
PROSE = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading.\n"
).encode()


def noise(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def text(n: int) -> bytes:
    return (PROSE * (n // len(PROSE) + 1))[:n]


def table_bytes(rows: int) -> bytes:
    """A binary table, 8 bytes per row, that zstd and lzma both shrink."""
    return b"".join(struct.pack("<IHH", i, i % 7, (i * 31) % 1000) for i in range(rows))


# --- route.plan ---------------------------------------------------------------------------------


def kinds(data: bytes) -> list[tuple[int, bool]]:
    return [(len(s), s.text) for s in route.plan(data)]


def test_plain_text_and_plain_binary_are_one_span_each():
    assert kinds(text(50_000)) == [(50_000, True)]
    assert kinds(noise(50_000)) == [(50_000, False)]
    assert kinds(b"") == []


def test_a_binary_run_inside_text_is_its_own_span():
    data = text(20_000) + noise(8192) + text(20_000)
    spans = route.plan(data)
    assert [s.text for s in spans] == [True, False, True]
    assert sum(len(s) for s in spans) == len(data)
    assert spans[1].start <= 20_000 < 20_000 + 8192 <= spans[1].end  # the noise is all binary


def test_small_islands_do_not_fragment():
    # A tar header's worth of NULs inside text stays with the text: one context for the model.
    assert [k for _, k in kinds(text(20_000) + bytes(512) + text(20_000))] == [True]
    # A short text run inside binary stays with the binary.
    assert [k for _, k in kinds(noise(20_000) + text(2000) + noise(20_000, 1))] == [False]


def test_a_mostly_binary_input_keeps_short_text_out_of_the_model():
    # 16 KB of text in 100 KB of binary (a PDF's shape): not worth a model's time.
    assert [k for _, k in kinds(text(16_384) + noise(84_000))] == [False]
    # The same text as the larger part of the input is text.
    assert [k for _, k in kinds(text(16_384) + noise(8_000))] == [True, False]


def test_odd_bytes_counts_controls_and_invalid_utf8_but_not_cut_characters():
    word = "héllo wörld ñ 漢字".encode()
    assert route.odd_bytes(word) == 0
    assert route.odd_bytes(word[2:-2]) == 0  # characters cut at both edges
    assert route.odd_bytes(b"ab\x00\x01cd") == 2
    assert route.odd_bytes(b"ab\xff\xfecd") == 2
    assert route.odd_bytes(b"tab\there\r\n\x1b[0m") == 0  # whitespace and escape are text


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 9000)), max_size=8), st.integers(0, 2**32))
def test_spans_cover_the_input_alternate_and_respect_characters(parts, seed):
    rng = random.Random(seed)
    data = b"".join(("é漢" * n).encode()[:n] if is_text else rng.randbytes(n) for is_text, n in parts)
    spans = route.plan(data)
    assert sum(len(s) for s in spans) == len(data)
    assert all(a.end == b.start and a.text != b.text for a, b in zip(spans, spans[1:]))
    for s in spans[1:]:
        # A cut inside a run of continuation bytes is moved back to its character's start
        # (up to 3 bytes): unless the bytes before it are all continuation bytes (binary).
        if any(data[i] & 0xC0 != 0x80 for i in range(max(0, s.start - 3), s.start)):
            assert data[s.start] & 0xC0 != 0x80


# --- binary.encode / decode ---------------------------------------------------------------------


def test_incompressible_data_is_stored_and_structured_data_is_compressed():
    assert binary.encode(noise(10_000))[0] is Method.STORED
    table = table_bytes(20_000)
    method, payload = binary.encode(table)
    assert method in (Method.ZSTD, Method.LZMA) and len(payload) < len(table) // 3
    assert binary.decode(method, payload, len(table), "segment 1 of 1") == table


def test_the_incompressibility_probe_misjudges_neither_small_inputs_nor_repeats():
    """Found by hypothesis: 170 bytes of text before 409 random ones, which zlib -1 could not
    shrink by 1% though zstd -19 could; and a random block twice over, which zlib's 32 KiB
    window cannot see as a repeat."""
    rng = random.Random(1)
    small = text(170) + rng.randbytes(409)
    assert binary.encode(small)[0] != Method.STORED
    block = rng.randbytes(binary.PROBE_FROM)
    method, payload = binary.encode(block + block)
    assert method != Method.STORED and len(payload) < 0.6 * 2 * len(block)


@pytest.mark.parametrize("rows", [500, 20_000])  # below and above PARALLEL_FROM: one thread, two
def test_the_smaller_of_zstd_and_lzma_wins(rows):
    table = table_bytes(rows)
    assert (len(table) >= binary.PARALLEL_FROM) == (rows == 20_000)
    zstd = zstandard.ZstdCompressor(level=19, write_checksum=False, write_content_size=True).compress(table)
    xz = lzma.compress(table, format=lzma.FORMAT_RAW, filters=binary._LZMA_ENCODE)
    method, payload = binary.encode(table)
    assert payload == min((zstd, xz), key=len)
    assert method is (Method.ZSTD if len(zstd) < len(xz) else Method.LZMA)


def test_a_zstd_thread_that_fails_is_retried_where_its_error_can_reach_the_caller(monkeypatch):
    table = table_bytes(20_000)
    calls, real = [], binary._zstd_encode

    def fails_in_the_worker(data):
        calls.append(threading.current_thread().name)
        if calls[-1] == "nczip-zstd":
            raise MemoryError
        return real(data)

    expected = binary.encode(table)
    monkeypatch.setattr(binary, "_zstd_encode", fails_in_the_worker)
    assert binary.encode(table) == expected
    assert calls == ["nczip-zstd", threading.current_thread().name]

    monkeypatch.setattr(binary, "_zstd_encode", lambda data: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        binary.encode(table)


@settings(max_examples=examples(100), deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 50))
def test_binary_codecs_round_trip(data, repeat):
    data = data * repeat
    method, payload = binary.encode(data)
    assert len(payload) <= len(data)
    assert binary.decode(method, payload, len(data), "s") == data


@pytest.mark.parametrize("method", [Method.ZSTD, Method.LZMA])
def test_damaged_payloads_are_reported_not_expanded(method):
    data = text(100_000)
    payload = (zstandard.ZstdCompressor(level=3).compress(data) if method is Method.ZSTD
               else lzma.compress(data, format=lzma.FORMAT_RAW, filters=binary._LZMA_ENCODE))
    with pytest.raises(CorruptSegmentError, match="segment 2 of 3 is damaged"):
        binary.decode(method, payload, 1000, "segment 2 of 3")  # claims fewer bytes than it holds
    with pytest.raises(CorruptSegmentError):
        binary.decode(method, payload[: len(payload) // 2], len(data), "s")  # truncated
    with pytest.raises(CorruptSegmentError):
        binary.decode(method, payload + b"\x00", len(data), "s")  # trailing bytes
    garbled = bytearray(payload)
    garbled[len(garbled) // 2] ^= 0xFF
    try:
        out = binary.decode(method, bytes(garbled), len(data), "s")
    except CorruptSegmentError:
        pass
    else:
        assert out != data  # a flip that still decodes is caught by the archive's SHA-256


def test_a_zstd_frame_without_its_size_is_refused():
    payload = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 100)
    with pytest.raises(CorruptSegmentError, match="does not record 300 bytes"):
        binary.decode(Method.ZSTD, payload, 300, "s")


# --- the pipeline ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auto(tiny_gguf):
    with Compressor(model=tiny_gguf, threads=1, window=64) as c:
        yield c


def test_binary_input_never_touches_the_model(auto, tmp_path):
    data = table_bytes(5000)
    loaded = auto.models_loaded
    archive = auto.compress(data)
    header, _ = container.read_header(archive)
    assert header.backend == "" and header.model_sha256 == bytes(32) and auto.models_loaded == loaded
    assert struct.unpack_from("<H", archive, 6)[0] == container.FLAG_SINGLE
    # Decodes without any model: a path that does not exist is never opened.
    with Compressor(model=tmp_path / "absent.gguf") as nothing:
        assert nothing.decompress(archive) == data
        assert nothing.models_loaded == 0


@pytest.mark.parametrize("name", sorted(edge_cases()))
def test_edge_cases_round_trip_on_the_automatic_route(auto, name):
    data = edge_cases()[name]
    archive = auto.compress(data)
    assert auto.decompress(archive) == data
    assert len(archive) <= plain_bound(data) + 64


def plain_bound(data: bytes) -> int:
    """min(zstd -19, xz -9) of `data` as the command-line tools write them."""
    zstd = zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data)
    return min(len(zstd), len(lzma.compress(data, preset=9)))


@settings(max_examples=examples(25), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["text", "noise", "zeros", "any"]), st.integers(1, 12_000)), max_size=5),
       st.binary(max_size=64), st.integers(0, 2**32))
def test_concatenations_of_text_and_binary_round_trip(auto, parts, anything, seed):
    rng = random.Random(seed)
    pieces = {"text": lambda n: text(n), "noise": rng.randbytes, "zeros": bytes, "any": lambda n: (anything * n)[:n]}
    data = b"".join(pieces[kind](n) for kind, n in parts)
    archive = auto.compress(data)
    assert auto.decompress(archive) == data
    assert len(archive) <= plain_bound(data) + 64


@settings(max_examples=examples(60), deadline=None)
@given(st.binary(max_size=5000))
def test_arbitrary_bytes_round_trip(auto, data):
    assert auto.decompress(auto.compress(data)) == data


@pytest.fixture
def weak_fallback(monkeypatch):
    """Make the binary coding of text spans weak (stored), so that the tiny model wins them and
    archives mix LLM segments with binary ones, as the real model's do."""
    real = binary.encode

    def encode(data):
        return (Method.STORED, bytes(data)) if route.is_text_block(bytes(data)[:512]) else real(data)

    monkeypatch.setattr(pipeline.binary, "encode", encode)


def test_mixed_archives_hold_llm_and_binary_segments(tiny_gguf, weak_fallback):
    table = table_bytes(1500)
    data = text(9000) + noise(6000) + text(9000) + table + text(9000)  # more text than binary
    with Compressor(model=tiny_gguf, threads=1, window=64) as c:
        archive = c.compress(data)
        methods = [s.method for s in container.read_archive(archive).segments]
        assert Method.LLM in methods and (Method.ZSTD in methods or Method.LZMA in methods)
        assert c.decompress(archive) == data
    # The streaming writer routes segment by segment exactly as the one-shot path does.
    import io

    import nczip

    buffer = io.BytesIO()
    with Compressor(model=tiny_gguf, threads=1, window=64) as c:
        with nczip.open(buffer, "wb", compressor=c) as f:
            for i in range(0, len(data), 7001):
                f.write(data[i : i + 7001])
    assert buffer.getvalue() == archive


def test_a_text_span_the_model_loses_is_kept_in_its_binary_coding(tiny_gguf, monkeypatch):
    calls = []
    real = pipeline.ChunkEncoder._encode_text

    def spy(self, part, *rest):
        calls.append(len(part))
        return real(self, part, *rest)

    monkeypatch.setattr(pipeline.ChunkEncoder, "_encode_text", spy)
    data = text(9000)
    with Compressor(model=tiny_gguf, threads=1, window=64) as c:
        archive = c.compress(data)
    assert calls == [9000]  # the model was tried on the text ...
    header, _ = container.read_header(archive)
    assert header.backend == ""  # ... and lost to zstd/lzma: the archive names no model
    assert len(archive) <= plain_bound(data) + 64


BINARIES = ["fireworks.jpeg", "paper-100k.pdf", "geo.protodata", "kppkn.gtb"]


@pytest.mark.parametrize("name", BINARIES)
def test_corpus_binaries_are_within_64_bytes_of_zstd_and_xz(auto, name):
    path = CORPORA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    data = path.read_bytes()
    loaded = auto.models_loaded
    archive = auto.compress(data)
    assert auto.models_loaded == loaded  # routed before any model time
    assert len(archive) <= plain_bound(data) + 64
    assert auto.decompress(archive) == data
    assert hashlib.sha256(auto.decompress(archive)).digest() == hashlib.sha256(data).digest()


def test_streaming_reads_of_plain_archives(auto):
    import io

    import nczip

    data = table_bytes(5000)
    for original in (data, b""):
        with nczip.open(io.BytesIO(auto.compress(original)), "rb", compressor=auto) as f:
            assert f.read() == original
    damaged = bytearray(auto.compress(data))
    damaged[-10] ^= 1
    with pytest.raises(CorruptSegmentError, match="segment 1 of 1"):
        with nczip.open(io.BytesIO(bytes(damaged)), "rb", compressor=auto) as f:
            f.read()
