"""Tests for nczip.container: round trips, every documented check, and damage detection.

Hostile archives are built here with `struct` directly from docs/format.md, not with the module's
writer, so a bug shared by writer and reader cannot hide itself.
"""

import dataclasses
import hashlib
import io
import random
import struct
import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples
from raw_archives import raw_archive, raw_body, raw_header, raw_single, raw_table, varint

from nczip.container import (
    FLAG_LLM_SINGLE,
    FLAG_SINGLE,
    MAGIC,
    MAX_HEADER_BODY,
    MAX_PARAMS,
    MAX_CODED_SEGMENT,
    MAX_SEGMENTS,
    Archive,
    Header,
    Method,
    Params,
    Segment,
    SegmentEntry,
    archive_size,
    damaged_segments,
    is_archive,
    read_archive,
    read_header,
    read_prefix,
    write_archive,
    write_archive_to,
)
from nczip.errors import (
    CorruptSegmentError,
    FormatError,
    NczipError,
    TruncatedError,
    UnsupportedVersionError,
)

ZERO32 = bytes(32)
MODEL_SHA = hashlib.sha256(b"model").digest()
RECORD_SIZE = 29  # u8 + 3 * u64 + u32


def make_archive(chunks, *, backend="llama.cpp", model_name="m.gguf", params=None):
    """An archive whose segments are (method, original bytes, token count, payload)."""
    original = b"".join(c[1] for c in chunks)
    header = Header(
        backend=backend,
        model_name=model_name,
        model_sha256=MODEL_SHA if backend else ZERO32,
        original_size=len(original),
        original_sha256=hashlib.sha256(original).digest(),
        params=params if params is not None else {},
    )
    segments = tuple(Segment(m, len(orig), tokens, payload) for m, orig, tokens, payload in chunks)
    return Archive(header, segments)


EMPTY = make_archive([], backend="", model_name="")
GOLDEN_ARCHIVE = make_archive(
    [
        (Method.STORED, b"hello", 0, b"hello"),
        (Method.LLM, b", ", 2, b"\xa5\x5a\x00"),
        (Method.ZSTD, b"world", 0, bytes.fromhex("28b52ffd2005290000776f726c64")),
    ],
    params={"temp_milli": -1, "ctx": 2048},
)
MANY = make_archive(
    [(Method.LLM, bytes([i]) * (i + 1), 1 + i // 2, bytes([i, ~i & 0xFF]) * (i % 4)) for i in range(6)]
    + [(Method.STORED, b"tail", 0, b"tail")],
    model_name="模型-ü-🦙.gguf",
    params={"a": -(2**63), "z9_": 2**63 - 1},
)
SINGLE_ZSTD = make_archive(
    [(Method.ZSTD, b"world", 0, bytes.fromhex("28b52ffd2005290000776f726c64"))], backend="", model_name=""
)
LLM_ONE = make_archive([(Method.LLM, b"hello, world", 5, b"\x12\x34\x56")], params={"temp_milli": -1, "ctx": 2048})
FIXED_ARCHIVES = {"empty": EMPTY, "golden": GOLDEN_ARCHIVE, "many": MANY, "single": SINGLE_ZSTD, "llm_single": LLM_ONE}


# --- raw builders, straight from docs/format.md ----------------------------------------------


def payload_spans(archive):
    """(start, end) of each payload in the written archive; payloads are last, in table order."""
    end = len(write_archive(archive))
    start = end - sum(len(s.payload) for s in archive.segments)
    spans = []
    for s in archive.segments:
        spans.append((start, start + len(s.payload)))
        start += len(s.payload)
    return spans


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXED_ARCHIVES))
def test_round_trip_fixed(name):
    archive = FIXED_ARCHIVES[name]
    data = write_archive(archive)
    assert read_archive(data) == archive
    assert read_archive(data, verify_payloads=False) == archive
    assert damaged_segments(data) == []
    assert is_archive(data)


def test_empty_archive_layout():
    data = write_archive(EMPTY)
    header, end = read_header(data)
    assert header.original_size == 0 and EMPTY.segments == ()
    # The SINGLE form: size 0 as one varint byte and the SHA-256, then the header CRC; no table.
    assert data == raw_single(0, hashlib.sha256(b"").digest())
    assert end == len(data) == 12 + 33 + 4


@pytest.mark.parametrize("method", list(Method))
def test_round_trip_each_method(method):
    tokens = 3 if method is Method.LLM else 0
    payload = b"abcdefgh" if method is Method.STORED else bytes(range(200))
    archive = make_archive([(method, b"abcdefgh", tokens, payload)])
    assert read_archive(write_archive(archive)) == archive


def test_round_trip_many_segments():
    chunks = [(Method(i % 3), bytes([i % 256]) * 3, 0, b"x" * (i % 5)) for i in range(3000)]
    chunks = [
        (m, o, 2 if m is Method.LLM else 0, o if m is Method.STORED else p) for m, o, _, p in chunks
    ]
    archive = make_archive(chunks)
    data = write_archive(archive)
    assert read_archive(data) == archive
    _, table_start = read_header(data)
    payload_bytes = sum(len(s.payload) for s in archive.segments)
    assert len(data) == table_start + 4 + 3000 * RECORD_SIZE + 4 + payload_bytes


def test_round_trip_params_extremes():
    params = {"a": -(2**63), "b": 2**63 - 1, "c": 0, "d": -1, "e" + "x" * 31: 7}
    params.update({f"p{i:03d}": i * 10**15 for i in range(MAX_PARAMS - len(params))})
    archive = make_archive([(Method.STORED, b"x", 0, b"x")], params=params)
    back = read_archive(write_archive(archive))
    assert back == archive
    assert dict(back.header.params) == params
    assert list(back.header.params) == sorted(params)


@pytest.mark.parametrize("name", ["模型.gguf", "ü" * 1000, "🦙\u200d\x00tab\tname", ""])
def test_round_trip_unicode_model_names(name):
    archive = make_archive([(Method.LLM, b"abc", 1, b"\x00")], model_name=name)
    assert read_archive(write_archive(archive)).header.model_name == name


def test_write_archive_to_stream():
    stream = io.BytesIO()
    stream.write(b"prefix")
    n = write_archive_to(GOLDEN_ARCHIVE, stream)
    assert stream.getvalue() == b"prefix" + write_archive(GOLDEN_ARCHIVE)
    assert n == len(stream.getvalue()) - len(b"prefix")


def test_read_header_needs_only_the_header():
    data = write_archive(GOLDEN_ARCHIVE)
    header, table_start = read_header(data)
    assert header == GOLDEN_ARCHIVE.header
    assert read_header(data[:table_start]) == (header, table_start)
    with pytest.raises(TruncatedError, match="header CRC-32 needs 4 bytes"):
        read_header(data[: table_start - 1])


def test_values_are_immutable_and_hashable():
    header = GOLDEN_ARCHIVE.header
    assert hash(GOLDEN_ARCHIVE) == hash(read_archive(write_archive(GOLDEN_ARCHIVE)))
    assert header.params == {"ctx": 2048, "temp_milli": -1}
    assert isinstance(header.params, Params)
    assert repr(header.params) == "Params({'ctx': 2048, 'temp_milli': -1})"
    with pytest.raises(TypeError):
        header.params["ctx"] = 1
    with pytest.raises(AttributeError):
        header.backend = "x"
    # A caller's dict is copied, not aliased.
    params = {"k": 1}
    h = Header("b", "m", MODEL_SHA, 0, ZERO32, params)
    params["k"] = 2
    assert h.params["k"] == 1


def test_is_archive():
    assert is_archive(MAGIC)
    assert is_archive(write_archive(EMPTY))
    assert not is_archive(b"")
    assert not is_archive(MAGIC[:3])
    assert not is_archive(b"\x28\xb5\x2f\xfd")  # zstd
    assert not is_archive(b"\x1f\x8b\x08\x00")  # gzip


# --- golden bytes ------------------------------------------------------------------------------

GOLDEN_HEX = (
    # fixed header: magic, version 1, flags 0, body length 123
    "894e435a" "0100" "0000" "7b000000"
    # body: backend "llama.cpp", model name "m.gguf", model SHA-256
    "09" "6c6c616d612e637070" "0600" "6d2e67677566"
    "9372c470eeadd5ecd9c3c74c2b3cb633f8e2f2fad799250a0f70d652b6b825e4"
    # original size 12, SHA-256("hello, world")
    "0c00000000000000"
    "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b"
    # 2 params, sorted: ctx=2048, temp_milli=-1
    "0200" "03" "637478" "0008000000000000" "0a" "74656d705f6d696c6c69" "ffffffffffffffff"
    # header CRC-32
    "07ffe6ae"
    # segment table: 3 records (method, original size, tokens, payload size, payload CRC-32)
    "03000000"
    "00" "0500000000000000" "0000000000000000" "0500000000000000" "86a61036"
    "01" "0200000000000000" "0200000000000000" "0300000000000000" "47f3a660"
    "02" "0500000000000000" "0000000000000000" "0e00000000000000" "5cd3eea2"
    # table CRC-32
    "80a4440f"
    # payloads
    "68656c6c6f" "a55a00" "28b52ffd2005290000776f726c64"
)


def test_golden_bytes():
    golden = bytes.fromhex(GOLDEN_HEX)
    assert write_archive(GOLDEN_ARCHIVE) == golden
    assert read_archive(golden) == GOLDEN_ARCHIVE


# docs/format.md's second example: the same text as one LLM segment, in the LLM_SINGLE form.
LLM_SINGLE_HEX = (
    "894e435a" "0100" "0200" "6b000000"
    "09" "6c6c616d612e637070"  # backend id
    "06" "6d2e67677566"  # model name, varint length
    "9372c470eeadd5ecd9c3c74c2b3cb633f8e2f2fad799250a0f70d652b6b825e4"
    "0c"  # original size
    "09ca7e4eaa6e8ae9c7d261167129184883644d07dfba7cbfbc4c8a2e08360d5b"
    "02" "03637478" "8020" "0a74656d705f6d696c6c69" "01"  # ctx = 2048, temp_milli = -1 (zigzag)
    "05" "03" "3aa9c1d9"  # tokens, payload size, payload CRC-32
    "6493d882"  # header CRC-32
    "123456"
)


def test_llm_single_golden_bytes():
    golden = bytes.fromhex(LLM_SINGLE_HEX)
    assert write_archive(LLM_ONE) == golden
    assert read_archive(golden) == LLM_ONE


# --- the COMPACT form ------------------------------------------------------------------------

from nczip.container import COMPACT_MARK, MAX_COMPACT_ARCHIVE, is_compact  # noqa: E402
from nczip.models.registry import KNOWN_MODELS  # noqa: E402

DEFAULT_MODEL = KNOWN_MODELS[0]


def compact_archive(original=b"hello, world", tokens=5, payload=b"\x12\x34\x56", preset=6, check_bytes=8):
    header = Header(DEFAULT_MODEL.backend, DEFAULT_MODEL.name, DEFAULT_MODEL.sha256, len(original),
                    hashlib.sha256(original).digest()[:check_bytes],
                    {"codec": 10 + preset, "n_vocab": DEFAULT_MODEL.n_vocab})
    return Archive(header, (Segment(Method.LLM, len(original), tokens, payload),))


COMPACT = compact_archive()
# docs/format.md, "The COMPACT form": `hello, world` as 5 tokens with the payload 12 34 56.
COMPACT_HEX = "894e435a02160c05" "09ca7e4eaa6e8ae9" "123456" "45f6018c"


def test_compact_golden_bytes():
    data = write_archive(COMPACT)
    assert data == bytes.fromhex(COMPACT_HEX)
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert len(data) == 23 and is_compact(data) and not is_compact(write_archive(LLM_ONE))
    assert read_archive(data) == COMPACT
    assert read_header(data) == (COMPACT.header, 16)


def test_compact_form_is_taken_exactly_when_it_can_be():
    full = compact_archive(check_bytes=32)
    assert write_archive(full) == write_archive(COMPACT)  # the original's SHA-256 is cut to 8 bytes
    others = [
        dataclasses.replace(full, header=dataclasses.replace(full.header, backend="llama.cpp-fa2-sw")),
        dataclasses.replace(full, header=dataclasses.replace(full.header, model_name="other.gguf")),
        dataclasses.replace(full, header=dataclasses.replace(full.header, model_sha256=MODEL_SHA)),
        dataclasses.replace(full, header=dataclasses.replace(full.header, params={"codec": 2, "n_vocab": 262144})),
        dataclasses.replace(full, header=dataclasses.replace(full.header, params={"codec": 16, "n_vocab": 262144, "x": 1})),
        dataclasses.replace(full, header=dataclasses.replace(full.header, params={"codec": 16, "n_vocab": 5})),
    ]
    for archive in others:
        data = write_archive(archive)
        assert not is_compact(data) and read_archive(data) == archive
    with pytest.raises(ValueError, match="only in the COMPACT form"):
        write_archive(dataclasses.replace(others[0], header=dataclasses.replace(others[0].header, original_sha256=bytes(8))))


@pytest.mark.parametrize("size, tokens", [(1, 1), (127, 50), (128, 128), (16383, 4000), (16384, 5000), (2**20, 300_000)])
def test_compact_overhead_is_at_most_24_bytes(size, tokens):
    archive = compact_archive(bytes(size), tokens, b"\x55" * 100)
    assert archive_size(archive) - 100 <= 24
    assert read_archive(write_archive(archive)) == archive


def test_every_damage_to_a_compact_archive_is_detected():
    data = write_archive(COMPACT)
    rng = random.Random(7)
    for offset in range(len(data)):
        for xor in [1 << bit for bit in range(8)] + [rng.randrange(1, 256) for _ in range(4)]:
            damaged = bytearray(data)
            damaged[offset] ^= xor
            with pytest.raises(NczipError):
                read_archive(bytes(damaged))
    for length in range(len(data)):
        with pytest.raises(NczipError):
            read_archive(data[:length])
    for extra in (b"\x00", b"\xff", data[-1:], data[:1]):
        with pytest.raises(FormatError, match="damaged or truncated"):
            read_archive(data + extra)


def test_compact_refuses_what_it_does_not_know():
    def sealed(body):
        return body + struct.pack("<I", zlib.crc32(body))

    check = hashlib.sha256(b"x").digest()[:8]
    with pytest.raises(UnsupportedVersionError, match="known model 15, which this nczip does not know"):
        read_archive(sealed(MAGIC + bytes([COMPACT_MARK, 0xF6, 1, 1]) + check + b"\x01"))
    with pytest.raises(FormatError, match="codec preset 0"):
        read_archive(sealed(MAGIC + bytes([COMPACT_MARK, 0x10, 1, 1]) + check + b"\x01"))
    with pytest.raises(FormatError, match="token count 2, expected 1 to its original size 1"):
        read_archive(sealed(MAGIC + bytes([COMPACT_MARK, 0x16, 1, 2]) + check + b"\x01"))
    with pytest.raises(FormatError, match="not a canonical"):
        read_archive(sealed(MAGIC + bytes([COMPACT_MARK, 0x16, 0x81, 0x00, 1]) + check + b"\x01"))
    with pytest.raises(FormatError, match=f"at most {MAX_COMPACT_ARCHIVE} bytes"):
        read_archive(MAGIC + bytes([COMPACT_MARK]) + bytes(MAX_COMPACT_ARCHIVE))


def test_compact_archives_stream_through_read_prefix():
    data = write_archive(COMPACT)
    header, entries, payloads = read_prefix(io.BytesIO(data))
    assert header == COMPACT.header and len(entries) == 1
    from nczip.container import read_payload

    assert read_payload(payloads, entries[0], 0, 1) == b"\x12\x34\x56" and payloads.read(1) == b""
    damaged = bytearray(data)
    damaged[-6] ^= 1
    with pytest.raises(FormatError, match="CRC-32 mismatch"):
        read_prefix(io.BytesIO(bytes(damaged)))


@settings(max_examples=examples(200), deadline=None)
@given(original=st.binary(min_size=1, max_size=300), payload=st.binary(max_size=60), preset=st.integers(1, 15),
       data=st.data())
def test_compact_archives_round_trip(original, payload, preset, data):
    tokens = data.draw(st.integers(1, len(original)))
    archive = compact_archive(original, tokens, payload, preset)
    written = write_archive(archive)
    assert is_compact(written) and read_archive(written) == archive and write_archive(read_archive(written)) == written


# --- caller errors ---------------------------------------------------------------------------


def header_kwargs(**changes):
    kw = dict(backend="b", model_name="m", model_sha256=MODEL_SHA, original_size=0,
              original_sha256=ZERO32, params={})  # fmt: skip
    kw.update(changes)
    return kw


@pytest.mark.parametrize(
    "changes",
    [
        {"backend": "llamä"},
        {"backend": "a\nb"},
        {"backend": "x" * 256},
        {"model_name": "\udc80"},
        {"model_name": "x" * 65536},
        {"model_name": "x" * 65000, "params": {f"k{i}": 0 for i in range(100)}},  # body > 64 KiB
        {"model_sha256": b"\x00" * 31},
        {"original_sha256": b"\x00" * 33},
        {"original_size": -1},
        {"original_size": 2**64},
        {"params": {"Upper": 1}},
        {"params": {"1x": 1}},
        {"params": {"": 1}},
        {"params": {"a" * 33: 1}},
        {"params": {"a-b": 1}},
        {"params": {"k\n": 1}},
        {"params": {"k": 2**63}},
        {"params": {"k": -(2**63) - 1}},
        {"params": {f"k{i}": 0 for i in range(MAX_PARAMS + 1)}},
    ],
)
def test_header_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        Header(**header_kwargs(**changes))


@pytest.mark.parametrize(
    "changes",
    [{"backend": b"x"}, {"model_name": None}, {"model_sha256": "0" * 32}, {"original_size": 1.0},
     {"original_size": True}, {"params": {"k": 1.5}}, {"params": {"k": True}}],  # fmt: skip
)
def test_header_rejects_bad_types(changes):
    with pytest.raises(TypeError):
        Header(**header_kwargs(**changes))


@pytest.mark.parametrize(
    "method, size, tokens, payload",
    [
        (Method.STORED, 0, 0, b""),  # empty segments are not allowed
        (Method.LLM, 0, 0, b""),
        (Method.STORED, 3, 0, b"ab"),  # STORED payload is the original
        (Method.STORED, 2, 1, b"ab"),
        (Method.ZSTD, 2, 1, b"ab"),
        (Method.LLM, 2, 0, b"ab"),  # at least one token ...
        (Method.LLM, 2, 3, b"ab"),  # ... and at most one per byte
        (9, 1, 0, b"a"),  # unknown method
        (Method.LLM, 2**64, 1, b""),
    ],
)
def test_segment_rejects_bad_values(method, size, tokens, payload):
    with pytest.raises(ValueError):
        Segment(method, size, tokens, payload)


def test_segment_accepts_int_method():
    assert Segment(1, 5, 5, b"").method is Method.LLM


def test_segment_rejects_non_bytes_payload():
    with pytest.raises(TypeError):
        Segment(Method.STORED, 1, 0, "a")


def test_archive_checks_sizes_add_up():
    header = Header(**header_kwargs(original_size=3))
    with pytest.raises(ValueError, match="cover 2 bytes"):
        Archive(header, (Segment(Method.STORED, 2, 0, b"ab"),))
    with pytest.raises(TypeError):
        Archive(header, (b"abc",))
    with pytest.raises(TypeError):
        Archive(None, ())


def test_archive_segment_limit():
    one = Segment(Method.STORED, 1, 0, b"a")
    header = Header(**header_kwargs(original_size=MAX_SEGMENTS + 1))
    with pytest.raises(ValueError, match="at most 1048576 segments"):
        Archive(header, (one,) * (MAX_SEGMENTS + 1))


# --- reader errors, one per documented check -------------------------------------------------


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"", TruncatedError, "not an nczip archive: the input is empty"),
        (b"\x89N", TruncatedError, "not an nczip archive: only 2 bytes"),
        (b"PK\x03\x04rest of a zip", FormatError, r"not an nczip archive: bad magic b'PK\\x03\\x04'"),
        (b"x", FormatError, "bad magic b'x'"),
        (b"\x09NCZ\x01\x00", FormatError, "text mode"),
        (MAGIC + b"\x01\x00\x00", TruncatedError, "fixed header needs 12 bytes at offset 0, 7 remain"),
    ],
)
def test_magic_errors(data, error, message):
    with pytest.raises(error, match=message) as info:
        read_archive(data)
    assert type(info.value) is error


def test_version_and_flags():
    body = raw_body()
    with pytest.raises(UnsupportedVersionError, match="version 3: this nczip reads version 1"):
        read_header(raw_header(body, version=3))  # 2 in the version's low byte marks the COMPACT form
    with pytest.raises(UnsupportedVersionError, match="version 65535"):
        read_header(MAGIC + b"\xff\xff" + bytes(6))  # decided from the fixed header alone
    with pytest.raises(FormatError, match="bad format version 0") as info:
        read_header(raw_header(body, version=0))
    assert not isinstance(info.value, UnsupportedVersionError)
    with pytest.raises(UnsupportedVersionError, match="flags 0x0004"):
        read_header(raw_header(body, flags=4))


def test_header_crc_and_length():
    data = bytearray(raw_header(raw_body()) + raw_table([]))
    assert read_archive(bytes(data)).segments == ()
    data[20] ^= 1
    with pytest.raises(FormatError, match=r"header is damaged \(CRC-32 mismatch\): stored 0x"):
        read_archive(bytes(data))
    with pytest.raises(FormatError, match="header body length 65537 exceeds the limit of 65536"):
        read_archive(raw_header(b"", body_len=MAX_HEADER_BODY + 1))
    with pytest.raises(TruncatedError, match="header body needs 65536 bytes at offset 12, 4 remain"):
        read_archive(raw_header(b"", body_len=MAX_HEADER_BODY))


@pytest.mark.parametrize(
    "body, message",
    [
        (raw_body() + b"\x00", "1 unexpected bytes at the end of the header body"),
        (raw_body()[:-1], "parameter count needs 2 bytes"),
        (b"\x05abc", "backend id needs 5 bytes at offset 13, 3 remain"),
        (raw_body(backend=b"caf\xe9"), "can't decode"),
        (raw_body(backend=b"a\x00"), "backend must be"),
        (raw_body(name=b"\xff"), "can't decode"),
        (raw_body(name=b"\xed\xa0\x80"), "can't decode"),  # an encoded surrogate is not UTF-8
        (raw_body(params=[(b"b", 1), (b"a", 2)]), "key 'a' does not sort after 'b'"),
        (raw_body(params=[(b"a", 1), (b"a", 2)]), "key 'a' does not sort after 'a'"),
        (raw_body(params=[(b"A", 1)]), "param key must match"),
        (raw_body(params=[(b"\xff", 1)]), "param key must match"),
        (raw_body(params=[(b"", 1)]), "param key must match"),
        (raw_body(params=[(b"k", 1)], count=2), "parameter 1 key length needs 1 bytes"),
        (raw_body(count=MAX_PARAMS + 1), "257 parameters, the limit is 256"),
        (raw_body(params=[(b"k", 1)])[:-3], "parameter 0 value needs 8 bytes"),
    ],
)
def test_malformed_header_body(body, message):
    # The CRC matches, so these are writer bugs or crafted input: FormatError, never truncation.
    with pytest.raises(FormatError, match=message) as info:
        read_header(raw_header(body))
    assert type(info.value) is FormatError
    assert "header is malformed" in str(info.value)


def seg(method, size, tokens, payload):
    return (method, size, tokens, payload)


@pytest.mark.parametrize(
    "segments, size, message",
    [
        ([seg(9, 1, 0, b"x")], None, "segment 1 of 1 is malformed: unknown method 9"),
        ([seg(0, 1, 0, b"x"), seg(0, 2, 0, b"x")], None,
         "segment 2 of 2 is malformed: STORED segment has payload size 1, expected its original size 2"),
        ([seg(0, 1, 1, b"x")], None, "STORED segment has token count 1"),
        ([seg(2, 1, 1, b"x")], None, "ZSTD segment has token count 1"),
        ([seg(1, 2, 0, b"x")], None, "LLM segment has token count 0, expected 1 to its original size 2"),
        ([seg(1, 2, 3, b"x")], None, "LLM segment has token count 3"),
        ([seg(1, 0, 0, b"")], None, "original_size must be in"),
        ([seg(0, 0, 0, b"")], None, "original_size must be in"),
        ([seg(0, 2, 0, b"xy")], 3,
         "segment table covers 2 bytes, but the header says the original is 3"),
        ([], 1, "segment table covers 0 bytes, but the header says the original is 1"),
    ],
)  # fmt: skip
def test_malformed_segment_table(segments, size, message):
    with pytest.raises(FormatError, match=message) as info:
        read_archive(raw_archive(segments, size=size))
    assert type(info.value) is FormatError


def test_table_crc():
    data = bytearray(raw_archive([seg(0, 2, 0, b"xy")]))
    data[-2 - 4 - RECORD_SIZE + 1] ^= 0x40  # original size field of the only record
    with pytest.raises(FormatError, match=r"segment table is damaged \(CRC-32 mismatch\)"):
        read_archive(bytes(data))


def test_extent_errors():
    data = raw_archive([seg(0, 2, 0, b"xy"), seg(1, 5, 2, b"abc")])
    with pytest.raises(FormatError, match="1 unexpected bytes after the last segment, at offset") as info:
        read_archive(data + b"\x00")
    assert type(info.value) is FormatError
    with pytest.raises(TruncatedError, match="segment 2 of 2 payload needs 3 bytes at offset .*, 1 remain"):
        read_archive(data[:-2])
    with pytest.raises(TruncatedError, match="segment table of 2 records needs 58 bytes"):
        read_archive(data[: len(raw_header(raw_body(size=7))) + 10])


def test_corrupt_segment_is_named():
    data = bytearray(write_archive(GOLDEN_ARCHIVE))
    start, end = payload_spans(GOLDEN_ARCHIVE)[1]
    data[start] ^= 0xFF
    message = r"segment 2 of 3 is damaged \(CRC-32 mismatch\): stored 0x60a6f347, computed 0x"
    with pytest.raises(CorruptSegmentError, match=message) as info:
        read_archive(bytes(data))
    assert info.value.segment_index == 1
    assert damaged_segments(bytes(data)) == [1]
    # Without verification the damaged payload comes back as it is.
    assert read_archive(bytes(data), verify_payloads=False).segments[1].payload == bytes(data[start:end])
    # Several damaged segments: read_archive names the first, damaged_segments lists all.
    s0, _ = payload_spans(GOLDEN_ARCHIVE)[0]
    s2, _ = payload_spans(GOLDEN_ARCHIVE)[2]
    data[s0] ^= 1
    data[s2] ^= 1
    assert damaged_segments(bytes(data)) == [0, 1, 2]
    with pytest.raises(CorruptSegmentError) as info:
        read_archive(bytes(data))
    assert info.value.segment_index == 0


def test_damaged_segments_needs_intact_structure():
    data = bytearray(write_archive(GOLDEN_ARCHIVE))
    data[-1] ^= 1
    assert damaged_segments(bytes(data)) == [2]
    with pytest.raises(TruncatedError):
        damaged_segments(bytes(data[:-1]))
    data[5] ^= 1
    with pytest.raises(UnsupportedVersionError):
        damaged_segments(bytes(data))


# --- bounds: hostile sizes fail fast, without allocating ---------------------------------------


def header_of(size=0):
    return raw_header(raw_body(size=size))


HOSTILE = {
    "2**32-1 segments": header_of() + struct.pack("<I", 2**32 - 1),
    "2**20 segments, none present": header_of() + struct.pack("<I", MAX_SEGMENTS) + bytes(100),
    "huge payload size": header_of(1) + raw_table([(2, 1, 0, 2**64 - 1, 0)]),
    "payload sizes summing past 2**64": header_of(2)
    + raw_table([(2, 1, 0, 2**64 - 1, 0), (2, 1, 0, 2**64 - 1, 0)]),
    "header body 2**32-1": MAGIC + struct.pack("<HHI", 1, 0, 2**32 - 1),
    "65535 params": raw_header(raw_body(count=0xFFFF)),
    "model name 65535 bytes, body short": raw_header(b"\x00\xff\xff"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sizes_fail_fast(name):
    data = HOSTILE[name]
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(NczipError) as info:
            read_archive(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, f"{name}: peak allocation {peak} bytes"
    assert elapsed < 1.0
    assert isinstance(info.value, FormatError)


def test_max_size_llm_segment_with_empty_payload_is_valid():
    # u64 maximum everywhere it is allowed: the container only checks consistency.
    data = header_of(2**64 - 1) + raw_table([(1, 2**64 - 1, 2**64 - 1, 0, 0)])
    archive = read_archive(data)
    assert archive.segments[0].original_size == 2**64 - 1
    # Written again, one LLM segment takes the LLM_SINGLE form (varints of up to 10 bytes).
    rewritten = write_archive(archive)
    assert struct.unpack_from("<H", rewritten, 6)[0] == FLAG_LLM_SINGLE
    assert read_archive(rewritten) == archive


# --- damage detection at every offset ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXED_ARCHIVES))
def test_every_single_byte_flip_is_detected(name):
    archive = FIXED_ARCHIVES[name]
    data = write_archive(archive)
    spans = payload_spans(archive)
    rng = random.Random(name)
    for offset in range(len(data)):
        in_segment = next((i for i, (s, e) in enumerate(spans) if s <= offset < e), None)
        for xor in [1 << bit for bit in range(8)] + [rng.randrange(1, 256) for _ in range(4)]:
            damaged = bytearray(data)
            damaged[offset] ^= xor
            with pytest.raises(NczipError) as info:
                read_archive(bytes(damaged))
            if in_segment is None:
                assert not isinstance(info.value, CorruptSegmentError), (offset, xor, info.value)
            else:
                assert isinstance(info.value, CorruptSegmentError), (offset, xor, info.value)
                assert info.value.segment_index == in_segment
                assert damaged_segments(bytes(damaged)) == [in_segment]


@pytest.mark.parametrize("name", sorted(FIXED_ARCHIVES))
def test_every_truncation_and_extension_is_detected(name):
    data = write_archive(FIXED_ARCHIVES[name])
    for length in range(len(data)):
        with pytest.raises(TruncatedError):
            read_archive(data[:length])
    for extra in (b"\x00", b"\xff", data[-1:], data[:1]):
        with pytest.raises(FormatError, match="unexpected bytes after the last segment"):
            read_archive(data + extra)


# --- property tests ---------------------------------------------------------------------------

printable_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
param_keys = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
i64 = st.integers(-(2**63), 2**63 - 1)
digests = st.binary(min_size=32, max_size=32)


@st.composite
def segments(draw):
    method = draw(st.sampled_from(Method))
    if method is Method.STORED:
        payload = draw(st.binary(min_size=1, max_size=40))
        return Segment(method, len(payload), 0, payload)
    limit = 2**61 - 1 if method in (Method.STORED, Method.LLM) else MAX_CODED_SEGMENT
    size = draw(st.one_of(st.integers(1, 100), st.integers(1, limit)))
    tokens = draw(st.integers(1, size)) if method is Method.LLM else 0
    return Segment(method, size, tokens, draw(st.binary(max_size=40)))


@st.composite
def archives(draw):
    segs = tuple(draw(st.lists(segments(), max_size=8)))  # 8 * (2**61 - 1) < 2**64
    header = Header(
        backend=draw(printable_ascii),
        model_name=draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)),
        model_sha256=draw(digests),
        original_size=sum(s.original_size for s in segs),
        original_sha256=draw(digests),
        params=draw(st.dictionaries(param_keys, i64, max_size=6)),
    )
    return Archive(header, segs)


@settings(max_examples=examples(150), deadline=None)
@given(archives())
def test_random_archives_round_trip(archive):
    data = write_archive(archive)
    assert read_archive(data) == archive
    assert read_header(data)[0] == archive.header
    assert damaged_segments(data) == []


def read_or_error(data):
    """Read `data`; only NczipError may escape. An accepted input must be canonical, but for the
    general form of one LLM segment (written before LLM_SINGLE), which writes back in LLM_SINGLE."""
    try:
        archive = read_archive(data)
    except NczipError:
        return None
    written = write_archive(archive)
    if struct.unpack_from("<H", data, 6)[0] == 0 and [s.method for s in archive.segments] == [Method.LLM]:
        assert struct.unpack_from("<H", written, 6)[0] == FLAG_LLM_SINGLE and read_archive(written) == archive
    else:
        assert written == data
    return archive


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: MAGIC + b)))
def test_arbitrary_bytes_raise_only_nczip_errors(data):
    read_or_error(data)


def mutate(rng_data, blob):
    """A random small edit: flip, insert, delete, or cut."""
    blob = bytearray(blob)
    kind = rng_data.draw(st.sampled_from(["flip", "insert", "delete", "cut", "set"]))
    where = rng_data.draw(st.integers(0, len(blob)))
    if kind == "insert" or not blob:
        blob[where:where] = rng_data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "flip":
        blob[min(where, len(blob) - 1)] ^= rng_data.draw(st.integers(1, 255))
    elif kind == "delete":
        del blob[where : where + rng_data.draw(st.integers(1, 8))]
    elif kind == "set":  # plant an extreme integer, to reach the bounds checks
        value = rng_data.draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 2**32 - 1, 2**63, 2**64 - 1]))
        blob[where : where + 8] = value.to_bytes(8, "little")
    else:
        del blob[where:]
    return bytes(blob)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(archives(), st.data())
def test_crc_fixed_mutations_raise_only_nczip_errors(archive, data):
    """Edit the header body or the segment table and recompute the CRCs, so that the parser's
    own checks (lengths, counts, order, rules) are what stands between the edit and a crash."""
    raw = write_archive(archive)
    (flags, body_len) = struct.unpack_from("<HI", raw, 6)
    body = raw[12 : 12 + body_len]
    table_start = 12 + body_len + 4
    if flags in (FLAG_SINGLE, FLAG_LLM_SINGLE):  # a body and the payload, no table
        fixed = MAGIC + struct.pack("<HHI", 1, flags, len(body := mutate(data, body)))
        edited = fixed + body + struct.pack("<I", zlib.crc32(fixed + body)) + raw[table_start:]
        assume(edited != raw)
        read_or_error(edited)
        return
    (count,) = struct.unpack_from("<I", raw, table_start)
    table = raw[table_start : table_start + 4 + count * RECORD_SIZE]
    payloads = raw[table_start + len(table) + 4 :]

    part = data.draw(st.sampled_from(["body", "table", "both"]))
    if part in ("body", "both"):
        body = mutate(data, body)
    if part in ("table", "both"):
        table = mutate(data, table)
    fixed = MAGIC + struct.pack("<HHI", 1, 0, len(body))
    edited = (
        fixed + body + struct.pack("<I", zlib.crc32(fixed + body))
        + table + struct.pack("<I", zlib.crc32(table)) + payloads
    )  # fmt: skip
    assume(edited != raw)
    read_or_error(edited)


@settings(max_examples=examples(200), deadline=None)
@given(archives(), st.data())
def test_raw_mutations_raise_only_nczip_errors(archive, data):
    raw = write_archive(archive)
    edited = mutate(data, raw)
    assume(edited != raw)
    with pytest.raises(NczipError):
        read_archive(edited)


# --- the SINGLE form ----------------------------------------------------------------------------

WORLD_ZSTD = bytes.fromhex("28b52ffd2005290000776f726c64")


def test_single_form_bytes_follow_the_doc():
    data = write_archive(SINGLE_ZSTD)
    sha = hashlib.sha256(b"world").digest()
    assert data == raw_single(5, sha, (2, len(WORLD_ZSTD), zlib.crc32(WORLD_ZSTD)), WORLD_ZSTD)
    # 12 fixed + 1 size + 32 SHA-256 + 1 method + 1 payload size + 4 CRC + 4 header CRC
    assert len(data) - len(WORLD_ZSTD) == 55


@pytest.mark.parametrize("method", [Method.STORED, Method.ZSTD, Method.LZMA])
def test_single_form_round_trips_each_method(method):
    payload = b"abcdefgh" if method is Method.STORED else bytes(range(200))
    archive = make_archive([(method, b"abcdefgh", 0, payload)], backend="", model_name="")
    data = write_archive(archive)
    assert struct.unpack_from("<H", data, 6)[0] == 1  # flag SINGLE
    assert read_archive(data) == archive
    header, entries, _ = read_prefix(io.BytesIO(data))
    assert header == archive.header and len(entries) == 1 and entries[0].payload_size == len(payload)


def test_archives_with_a_model_or_several_segments_keep_the_general_form():
    for archive in (GOLDEN_ARCHIVE, make_archive([(Method.STORED, b"ab", 0, b"ab"), (Method.STORED, b"c", 0, b"c")], backend="", model_name="")):
        data = write_archive(archive)
        assert struct.unpack_from("<H", data, 6)[0] == 0
        assert read_archive(data) == archive


def test_general_form_where_single_is_due_is_rejected():
    data = raw_header(raw_body(backend=b"", size=2, sha=hashlib.sha256(b"xy").digest())) + raw_table([(0, 2, 0, 2, zlib.crc32(b"xy"))]) + b"xy"
    with pytest.raises(FormatError, match="must take the SINGLE form"):
        read_archive(data)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"\x80\x00" + ZERO32, "not a canonical"),  # 0 written in two bytes
        (b"\xff" * 10 + ZERO32, "longer than 10 bytes"),
        (b"\xff" * 9 + b"\x02" + ZERO32, "not a canonical 64-bit"),  # 2**64
        (varint(3) + ZERO32 + b"\x01" + varint(3) + bytes(4), "cannot hold an LLM segment"),
        (varint(3) + ZERO32 + b"\x07" + varint(3) + bytes(4), "unknown method 7"),
        (varint(3) + ZERO32 + b"\x00" + varint(2) + bytes(4), "STORED segment has payload size 2"),
        (varint(MAX_CODED_SEGMENT + 1) + ZERO32 + b"\x02" + varint(3) + bytes(4), "the limit is 1048576"),
        (varint(0) + ZERO32 + b"\x00", "1 unexpected bytes at the end of the header body"),
        (varint(3) + ZERO32 + b"\x02", "needs"),
    ],
)
def test_malformed_single_body(body, message):
    with pytest.raises(FormatError, match=message):
        read_archive(raw_header(body, flags=1) + b"abc")


def test_coded_segments_are_bounded_in_the_general_form_too():
    data = header_of(MAX_CODED_SEGMENT + 1) + raw_table([(3, MAX_CODED_SEGMENT + 1, 0, 1, zlib.crc32(b"x"))]) + b"x"
    with pytest.raises(FormatError, match="LZMA segment has original size 1048577, the limit is 1048576"):
        read_archive(data)


def test_unknown_flags_name_the_known_ones():
    with pytest.raises(UnsupportedVersionError, match="flags 0x0004: format version 1 defines 0x0003 only"):
        read_header(raw_header(varint(0) + ZERO32, flags=4))


def test_single_and_llm_single_exclude_each_other():
    with pytest.raises(FormatError, match="SINGLE and LLM_SINGLE exclude each other"):
        read_header(raw_header(varint(0) + ZERO32, flags=3))


# --- the LLM_SINGLE form ------------------------------------------------------------------------


def zigzag(value):
    """docs/format.md's spelling: (v << 1) XOR (v >> 63), as an unsigned 64-bit value."""
    return ((value << 1) ^ (value >> 63)) & (2**64 - 1)


def raw_llm_single(*, backend=b"t", name=b"", model=MODEL_SHA, size=1, sha=ZERO32, params=(), count=None,
                   tokens=1, payload=b"", payload_size=None, crc=None, flags=FLAG_LLM_SINGLE, tail=b""):
    """An LLM_SINGLE archive straight from docs/format.md; `tail` is appended to the body."""
    body = struct.pack("<B", len(backend)) + backend + varint(len(name)) + name + model + varint(size) + sha
    body += varint(len(params) if count is None else count)
    for key, value in params:
        body += struct.pack("<B", len(key)) + key + varint(zigzag(value))
    body += varint(tokens) + varint(len(payload) if payload_size is None else payload_size)
    body += struct.pack("<I", zlib.crc32(payload) if crc is None else crc) + tail
    return raw_header(body, flags=flags) + payload


def test_llm_single_form_bytes_follow_the_doc():
    data = write_archive(LLM_ONE)
    sha = hashlib.sha256(b"hello, world").digest()
    expected = raw_llm_single(backend=b"llama.cpp", name=b"m.gguf", size=12, sha=sha,
                              params=[(b"ctx", 2048), (b"temp_milli", -1)], tokens=5, payload=b"\x12\x34\x56")
    assert data == expected
    # 12 fixed + 10 backend id + 7 name + 32 + 1 size + 32 + 1 count + (1 + 3 + 2) + (1 + 10 + 1)
    # + 1 tokens + 1 payload size + 4 CRC + 4 header CRC: 123 bytes where the general form takes 176.
    assert len(data) - 3 == 123
    general = raw_header(raw_body(backend=b"llama.cpp", name=b"m.gguf", model=MODEL_SHA, size=12, sha=sha,
                                  params=[(b"ctx", 2048), (b"temp_milli", -1)]))
    general += raw_table([(1, 12, 5, 3, zlib.crc32(b"\x12\x34\x56"))])
    assert len(general) == 176
    assert read_archive(general + b"\x12\x34\x56") == LLM_ONE  # archives written before LLM_SINGLE


@pytest.mark.parametrize("params", [{}, {"a": -(2**63), "b": -1, "c": 0, "d": 1, "e": 63, "f": 64, "z9_": 2**63 - 1}])
def test_llm_single_form_round_trips_params(params):
    archive = make_archive([(Method.LLM, b"some text", 3, b"\x01\x02")], params=params)
    data = write_archive(archive)
    assert struct.unpack_from("<H", data, 6)[0] == FLAG_LLM_SINGLE
    assert read_archive(data) == archive
    assert archive_size(archive) == len(data)
    header, entries, _ = read_prefix(io.BytesIO(data))
    assert header == archive.header
    assert entries == [SegmentEntry(Method.LLM, 9, 3, 2, zlib.crc32(b"\x01\x02"))]


def test_an_llm_single_body_over_the_limit_keeps_the_general_form():
    # Varints of the largest sizes take 10 bytes where the general form has 8: with a model name
    # that fills the general body to near its limit, the LLM_SINGLE body would not fit.
    size = 2**64 - 1
    name = "n" * (MAX_HEADER_BODY - 90)
    header = Header("llama.cpp", name, MODEL_SHA, size, ZERO32, {})
    archive = Archive(header, (Segment(Method.LLM, size, size, b""),))
    data = write_archive(archive)
    assert struct.unpack_from("<H", data, 6)[0] == 0
    assert read_archive(data) == archive
    smaller = Archive(dataclasses.replace(header, model_name="n" * (MAX_HEADER_BODY - 120)), archive.segments)
    assert struct.unpack_from("<H", write_archive(smaller), 6)[0] == FLAG_LLM_SINGLE


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(tokens=0), "LLM segment has token count 0"),
        (dict(size=3, tokens=4), "LLM segment has token count 4, expected 1 to its original size 3"),
        (dict(size=0), "LLM segment has token count 1, expected 1 to its original size 0|original_size"),
        (dict(count=MAX_PARAMS + 1), "257 parameters, the limit is 256"),
        (dict(params=[(b"b", 1), (b"a", 1)]), "parameter key 'a' does not sort after 'b'"),
        (dict(params=[(b"B", 1)]), "param key must match"),
        (dict(backend=b"\x01"), "backend must be"),
        (dict(name=b"\xff"), "header is malformed"),
        (dict(tail=b"\x00"), "1 unexpected bytes at the end of the header body"),
        (dict(payload=b"x", payload_size=2), "truncated archive|needs"),
    ],
)
def test_malformed_llm_single_body(changes, message):
    with pytest.raises((FormatError, TruncatedError), match=message):
        read_archive(raw_llm_single(**changes))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"\x00" + b"\x80\x00", "model name length is not a canonical"),  # 0 in two bytes
        (b"\x00\x00" + MODEL_SHA + b"\xff" * 9 + b"\x02", "original size is not a canonical 64-bit"),  # 2**64
        (b"\x00\x00" + MODEL_SHA + b"\x01" + ZERO32 + b"\x01\x01a" + b"\xff" * 10, "longer than 10 bytes"),
        (b"\x00\x00" + MODEL_SHA + b"\x01" + ZERO32 + b"\x00\x01\x01", "needs"),  # no CRC
    ],
)
def test_malformed_llm_single_varints(body, message):
    with pytest.raises(FormatError, match=message):
        read_archive(raw_header(body, flags=FLAG_LLM_SINGLE))
