"""The .ncz container: a header that names the model, a table of segments, then their payloads.

The layout is specified byte by byte in docs/format.md; this module is the reference reader and
writer. Everything here is plain `struct`: the container is small next to the payloads, and a
format anyone can re-implement from the doc matters more than speed.

Reading is defensive. Every length and count in an archive is checked against a fixed limit and
against the bytes actually present before it is used, so a damaged or hostile archive raises one
of the exceptions in nczip.errors; it never makes us allocate more than the input or loop long.
"""

from __future__ import annotations

import enum
import io
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from nczip.errors import (
    CorruptSegmentError,
    FormatError,
    TruncatedError,
    UnsupportedVersionError,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_HEADER_BODY",
    "MAX_PARAMS",
    "MAX_SEGMENTS",
    "MAX_CODED_SEGMENT",
    "FLAG_SINGLE",
    "FLAG_LLM_SINGLE",
    "COMPACT_MARK",
    "COMPACT_PRESET_BASE",
    "Method",
    "Params",
    "Header",
    "Segment",
    "Archive",
    "write_archive",
    "write_archive_to",
    "archive_size",
    "RECORD_BYTES",
    "read_header",
    "read_archive",
    "read_prefix",
    "read_payload",
    "SegmentEntry",
    "damaged_segments",
    "is_archive",
]

# A non-ASCII first byte, as in PNG: a text-mode transfer that strips the high bit or rewrites
# line endings breaks the magic, so the damage is reported as such instead of as garbage later.
MAGIC = b"\x89NCZ"
FORMAT_VERSION = 1

MAX_HEADER_BODY = 65536
MAX_PARAMS = 256
MAX_SEGMENTS = 2**20
# The most original bytes one ZSTD or LZMA segment may hold (what the writer cuts at, see
# segment.py): decoding allocates at most this much, whatever a forged archive claims.
MAX_CODED_SEGMENT = 2**20

# Flags in the fixed header. SINGLE: an archive that needs no model and holds at most one
# segment (a stored, zstd or lzma fallback) has a compact header and no segment table, so that
# nczip's worst case is zstd or lzma plus ~60 bytes.
FLAG_SINGLE = 0x0001
# LLM_SINGLE: an archive of one LLM segment (a text file of up to 1 MiB, nczip's common case)
# keeps every field of the general header but writes its integers as varints and its one segment
# record inside the header body: ~55 bytes less than the general form, 2% of the archive of a
# 20 KB English text.
FLAG_LLM_SINGLE = 0x0002
_KNOWN_FLAGS = FLAG_SINGLE | FLAG_LLM_SINGLE

# The COMPACT form: an archive of one LLM segment coded with a model nczip knows by a small id
# (models/registry.py) and a codec preset. The byte after the magic is 2, where the other forms
# have the low byte of their u16 format version (1): readers from before it refuse it as "a
# newer format". Its whole header is 6 bytes plus two varints and an 8-byte prefix of the
# original's SHA-256; one CRC-32 at the end covers the archive. 18-24 bytes around the payload.
COMPACT_MARK = 2
# Its preset nibble p stands for codec preset COMPACT_PRESET_BASE + p (the levels, params.py).
COMPACT_PRESET_BASE = 10
COMPACT_CHECK_BYTES = 8
# The most bytes a COMPACT archive may have: one segment of at most 1 MiB never codes to more.
MAX_COMPACT_ARCHIVE = 2**21

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_FIXED = struct.Struct("<4sHHI")  # magic, format version, flags, header body length
_RECORD = struct.Struct("<BQQQI")  # method, original size, token count, payload size, CRC-32
RECORD_BYTES = _RECORD.size  # what one more segment costs in the table

_U64_MAX = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_PARAM_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


class Method(enum.IntEnum):
    """How one segment's payload encodes its slice of the original bytes."""

    STORED = 0  # the bytes themselves
    LLM = 1  # range-coded with the model as the predictor
    ZSTD = 2  # a zstandard frame, without checksum
    LZMA = 3  # a raw LZMA2 stream (dictionary 1 MiB), without the .xz wrapper


# ---------------------------------------------------------------------------------------------
# Values. They validate themselves, so anything that can be constructed can be written, and the
# reader reuses the same checks on what it parses.


class Params(Mapping[str, int]):
    """A read-only, hashable str -> int mapping, iterated in key order (the order on disk)."""

    __slots__ = ("_items", "_dict")

    def __init__(self, items: Mapping[str, int] | Iterable[tuple[str, int]] = ()):
        pairs = dict(items)
        self._items = tuple(sorted(pairs.items()))
        self._dict = dict(self._items)

    def __getitem__(self, key: str) -> int:
        return self._dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Params({self._dict!r})"


def _check_int(name: str, value: object, low: int, high: int) -> None:
    # bool is an int subclass; a True where a size belongs is a caller bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _as_digest(name: str, value: object, sizes: tuple[int, ...] = (32,)) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if len(value) not in sizes:
        raise ValueError(f"{name} must be {' or '.join(map(str, sizes))} bytes, got {len(value)}")
    return value


@dataclass(frozen=True)
class Header:
    """What a decoder must know before it spends any model time."""

    backend: str  # inference backend id, e.g. "llama.cpp"; "" when no segment needs a model
    model_name: str  # informational, for error messages
    model_sha256: bytes  # identifies the model; all zero when no segment needs one
    original_size: int
    original_sha256: bytes  # its SHA-256; in the COMPACT form only the first 8 bytes of it
    params: Mapping[str, int]  # coding parameters that must match exactly at decode time

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str):
            raise TypeError(f"backend must be a str, not {type(self.backend).__name__}")
        # Printable ASCII only: the id ends up in error messages and is compared byte for byte.
        if not _PRINTABLE_ASCII.fullmatch(self.backend) or len(self.backend) > 255:
            raise ValueError(
                f"backend must be at most 255 printable ASCII characters, got {self.backend!r}"
            )
        if not isinstance(self.model_name, str):
            raise TypeError(f"model_name must be a str, not {type(self.model_name).__name__}")
        try:
            name_len = len(self.model_name.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(f"model_name is not encodable as UTF-8: {e}") from None
        if name_len > 0xFFFF:
            raise ValueError(f"model_name must be at most 65535 bytes of UTF-8, got {name_len}")
        _check_int("original_size", self.original_size, 0, _U64_MAX)
        object.__setattr__(self, "model_sha256", _as_digest("model_sha256", self.model_sha256))
        object.__setattr__(
            self, "original_sha256", _as_digest("original_sha256", self.original_sha256, (32, COMPACT_CHECK_BYTES))
        )

        params = self.params if isinstance(self.params, Params) else Params(self.params)
        if len(params) > MAX_PARAMS:
            raise ValueError(f"at most {MAX_PARAMS} params are allowed, got {len(params)}")
        for key, value in params.items():
            if not isinstance(key, str) or not _PARAM_KEY.fullmatch(key):
                raise ValueError(f"param key must match [a-z][a-z0-9_]{{0,31}}, got {key!r}")
            _check_int(f"param {key!r}", value, _I64_MIN, _I64_MAX)
        object.__setattr__(self, "params", params)

        # Only the model name can push the body past its limit; say so here, not at write time.
        body_len = len(_pack_header_body(self)) if len(self.original_sha256) == 32 else 0
        if body_len > MAX_HEADER_BODY:
            raise ValueError(
                f"header body would be {body_len} bytes, the limit is {MAX_HEADER_BODY}"
            )


def _check_segment(method: int, original_size: int, token_count: int, payload_size: int) -> Method:
    """The per-segment rules of the format; raises ValueError saying which one is broken."""
    try:
        method = Method(method)
    except ValueError:
        raise ValueError(f"unknown method {method}") from None
    # Zero-length segments carry nothing; forbidding them keeps the segmentation canonical.
    _check_int("original_size", original_size, 1, _U64_MAX)
    _check_int("token_count", token_count, 0, _U64_MAX)
    if method is Method.STORED:
        if payload_size != original_size:
            raise ValueError(
                f"STORED segment has payload size {payload_size}, "
                f"expected its original size {original_size}"
            )
        if token_count != 0:
            raise ValueError(f"STORED segment has token count {token_count}, expected 0")
    elif method in (Method.ZSTD, Method.LZMA):
        if token_count != 0:
            raise ValueError(f"{method.name} segment has token count {token_count}, expected 0")
        if original_size > MAX_CODED_SEGMENT:
            raise ValueError(
                f"{method.name} segment has original size {original_size}, "
                f"the limit is {MAX_CODED_SEGMENT}"
            )
    elif not 1 <= token_count <= original_size:
        # Every token covers at least one byte, so more tokens than bytes is impossible.
        raise ValueError(
            f"LLM segment has token count {token_count}, "
            f"expected 1 to its original size {original_size}"
        )
    return method


@dataclass(frozen=True)
class Segment:
    """One independently coded slice of the original bytes."""

    method: Method
    original_size: int
    token_count: int  # LLM segments only; 0 otherwise
    payload: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")
        object.__setattr__(self, "payload", bytes(self.payload))
        method = _check_segment(
            self.method, self.original_size, self.token_count, len(self.payload)
        )
        object.__setattr__(self, "method", method)


@dataclass(frozen=True)
class Archive:
    """A whole .ncz file: the header, and the segments in the order of the original bytes."""

    header: Header
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise TypeError(f"header must be a Header, not {type(self.header).__name__}")
        segments = tuple(self.segments)
        for segment in segments:
            if not isinstance(segment, Segment):
                raise TypeError(f"segments must be Segment objects, not {type(segment).__name__}")
        if len(segments) > MAX_SEGMENTS:
            raise ValueError(f"at most {MAX_SEGMENTS} segments are allowed, got {len(segments)}")
        total = sum(segment.original_size for segment in segments)
        if total != self.header.original_size:
            raise ValueError(
                f"segments cover {total} bytes, "
                f"but the header says the original is {self.header.original_size}"
            )
        object.__setattr__(self, "segments", segments)


# ---------------------------------------------------------------------------------------------
# Writing


def _pack_header_body(header: Header) -> bytes:
    backend = header.backend.encode("ascii")
    name = header.model_name.encode("utf-8")
    parts = [
        _U8.pack(len(backend)), backend,
        _U16.pack(len(name)), name,
        header.model_sha256,
        _U64.pack(header.original_size),
        header.original_sha256,
        _U16.pack(len(header.params)),
    ]  # fmt: skip
    for key, value in header.params.items():  # Params iterates in sorted order
        parts += [_U8.pack(len(key)), key.encode("ascii"), _I64.pack(value)]
    return b"".join(parts)


def _pack_llm_single_body(archive: Archive) -> bytes:
    header, (segment,) = archive.header, archive.segments
    backend = header.backend.encode("ascii")
    name = header.model_name.encode("utf-8")
    parts = [
        _U8.pack(len(backend)), backend,
        _varint(len(name)), name,
        header.model_sha256,
        _varint(header.original_size),
        header.original_sha256,
        _varint(len(header.params)),
    ]  # fmt: skip
    for key, value in header.params.items():  # Params iterates in sorted order
        parts += [_U8.pack(len(key)), key.encode("ascii"), _varint(_zigzag(value))]
    parts += [_varint(segment.token_count), _varint(len(segment.payload)), _U32.pack(zlib.crc32(segment.payload))]
    return b"".join(parts)


def _zigzag(value: int) -> int:
    """A signed 64-bit value as an unsigned one that is small when |value| is: 0, -1, 1, -2 -> 0, 1, 2, 3."""
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _pack_single_body(archive: Archive) -> bytes:
    parts = [_varint(archive.header.original_size), archive.header.original_sha256]
    for segment in archive.segments:
        parts += [_U8.pack(segment.method), _varint(len(segment.payload)), _U32.pack(zlib.crc32(segment.payload))]
    return b"".join(parts)


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, high bit set on all but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _compact_head_of(archive: Archive) -> bytes | None:
    """The COMPACT form's bytes before the payload, when `archive` may take that form: one LLM
    segment, a known model with its own backend and name, and parameters that are exactly a
    compact codec preset and the model's vocabulary size."""
    from nczip.models.registry import known_model  # plain data, no model is loaded

    header = archive.header
    if len(archive.segments) != 1 or archive.segments[0].method is not Method.LLM:
        return None
    model = known_model(sha256=header.model_sha256)
    params = dict(header.params)
    if (model is None or header.backend != model.backend or header.model_name != model.name
            or set(params) != {"codec", "n_vocab"} or params["n_vocab"] != model.n_vocab):
        return None
    preset = params["codec"] - COMPACT_PRESET_BASE
    if not 1 <= preset <= 15:
        return None
    segment = archive.segments[0]
    return b"".join([
        MAGIC, _U8.pack(COMPACT_MARK), _U8.pack(model.id << 4 | preset),
        _varint(header.original_size), _varint(segment.token_count),
        header.original_sha256[:COMPACT_CHECK_BYTES],
    ])  # fmt: skip


def write_archive_to(archive: Archive, stream: BinaryIO) -> int:
    """Write `archive` to a binary stream whose write() takes whole buffers; return bytes written.

    Payloads are written one by one, never joined, so peak memory stays near the archive's size.
    """
    compact = _compact_head_of(archive)
    if compact is not None:
        payload = archive.segments[0].payload
        stream.write(compact)
        stream.write(payload)
        stream.write(_U32.pack(zlib.crc32(payload, zlib.crc32(compact))))
        return len(compact) + len(payload) + 4
    if len(archive.header.original_sha256) != 32:
        raise ValueError("an 8-byte original_sha256 exists only in the COMPACT form, which this archive cannot take")
    single = _single_form_of(archive)
    if single is not None:  # the only form such archives take
        flag, body = single
        fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, flag, len(body))
        head = fixed + body + _U32.pack(zlib.crc32(body, zlib.crc32(fixed)))
        stream.write(head)
        for segment in archive.segments:
            stream.write(segment.payload)
        return len(head) + sum(len(segment.payload) for segment in archive.segments)

    body = _pack_header_body(archive.header)
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(body))
    header_crc = zlib.crc32(body, zlib.crc32(fixed))

    table = bytearray(_U32.pack(len(archive.segments)))
    for segment in archive.segments:
        table += _RECORD.pack(
            segment.method,
            segment.original_size,
            segment.token_count,
            len(segment.payload),
            zlib.crc32(segment.payload),
        )
    table += _U32.pack(zlib.crc32(table))

    written = 0
    for chunk in (fixed, body, _U32.pack(header_crc), table):
        stream.write(chunk)
        written += len(chunk)
    for segment in archive.segments:
        stream.write(segment.payload)
        written += len(segment.payload)
    return written


def _single_form_of(archive: Archive) -> tuple[int, bytes] | None:
    """(flag, header body) of the SINGLE or LLM_SINGLE form that `archive` takes, or None for the
    general form. An LLM_SINGLE body over the header limit (a model name near 64 KiB) keeps the
    general form, whose fixed-width fields may fit where varints would not."""
    if _needs_single_form(archive.header, archive.segments):
        return FLAG_SINGLE, _pack_single_body(archive)
    if len(archive.segments) == 1 and archive.segments[0].method is Method.LLM:
        body = _pack_llm_single_body(archive)
        if len(body) <= MAX_HEADER_BODY:
            return FLAG_LLM_SINGLE, body
    return None


class _Counter:
    def write(self, chunk: bytes) -> int:
        return len(chunk)


def archive_size(archive: Archive) -> int:
    """How many bytes write_archive would produce, without building them."""
    return write_archive_to(archive, _Counter())  # type: ignore[arg-type]


def write_archive(archive: Archive) -> bytes:
    """Return the complete archive as bytes."""
    buffer = io.BytesIO()
    write_archive_to(archive, buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Reading


class _Reader:
    """Sequential reads from data[pos:end] that check the bytes are there first.

    `short` builds the exception for a read past `end`; each read names its field, so the error
    says what was expected and what was found.
    """

    def __init__(self, data: bytes, pos: int, end: int, short):
        self.data, self.pos, self.end, self.short = data, pos, end, short

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise self.short(what, n, self.pos, self.end - self.pos)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, st: struct.Struct, what: str) -> int:
        (value,) = st.unpack(self.take(st.size, what))
        return value


def _truncated(what: str, n: int, offset: int, remain: int) -> TruncatedError:
    return TruncatedError(
        f"truncated archive: {what} needs {n} bytes at offset {offset}, {remain} remain"
    )


def _malformed_body(what: str, n: int, offset: int, remain: int) -> FormatError:
    # The header CRC matched, so this is not transmission damage: the writer was wrong.
    return FormatError(
        f"header is malformed: {what} needs {n} bytes at offset {offset}, "
        f"{remain} remain in the header body"
    )


def _crc_note(stored: int, computed: int) -> str:
    return f"stored 0x{stored:08x}, computed 0x{computed:08x}"


def read_header(data: bytes) -> tuple[Header, int]:
    """Parse and check the header; return it and the offset where the segment table starts
    (where the payload starts, in the SINGLE and LLM_SINGLE forms).

    Needs only a prefix of the archive that contains the header, so a caller can check the
    model before reading or verifying anything else.
    """
    header, pos, _ = _read_head(data)
    return header, pos


class _SingleRecord(NamedTuple):
    method: Method
    original_size: int
    token_count: int
    payload_size: int
    crc: int


def _read_head(data: bytes) -> tuple[Header, int, list[_SingleRecord] | None]:
    """The header, where what follows it starts, and for the SINGLE forms their (0 or 1) records."""
    data = bytes(data)
    if data[:4] != MAGIC:
        if not data:
            raise TruncatedError("not an nczip archive: the input is empty")
        if MAGIC.startswith(data):
            raise TruncatedError(
                f"not an nczip archive: only {len(data)} bytes, shorter than the 4-byte magic"
            )
        hint = ""
        if data[1:4] == MAGIC[1:]:
            hint = " (only the first byte differs: was the file transferred in text mode?)"
        raise FormatError(f"not an nczip archive: bad magic {data[:4]!r}, expected {MAGIC!r}{hint}")
    if len(data) > 4 and data[4] == COMPACT_MARK:
        return _read_compact(data)
    if len(data) < _FIXED.size:
        raise _truncated("fixed header", _FIXED.size, 0, len(data))

    _, version, flags, body_len = _FIXED.unpack_from(data)
    # Version and flags come before the CRC: a newer format may place everything after the
    # fixed header differently, and "upgrade nczip" is the useful message then.
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"unsupported format version {version}: this nczip reads version {FORMAT_VERSION} "
            "(the archive was written by a newer nczip, or its header is damaged)"
        )
    if version != FORMAT_VERSION:
        raise FormatError(
            f"bad format version {version}: this nczip reads version {FORMAT_VERSION}"
        )
    if flags & ~_KNOWN_FLAGS:
        raise UnsupportedVersionError(
            f"unsupported flags 0x{flags:04x}: format version {FORMAT_VERSION} defines "
            f"0x{_KNOWN_FLAGS:04x} only (the archive was written by a newer nczip, or its header is damaged)"
        )
    if flags == FLAG_SINGLE | FLAG_LLM_SINGLE:
        raise FormatError("header is malformed: flags SINGLE and LLM_SINGLE exclude each other")
    if body_len > MAX_HEADER_BODY:
        raise FormatError(f"header body length {body_len} exceeds the limit of {MAX_HEADER_BODY}")

    body_end = _FIXED.size + body_len
    reader = _Reader(data, _FIXED.size, len(data), _truncated)
    reader.take(body_len, "header body")
    stored = reader.unpack(_U32, "header CRC-32")
    computed = zlib.crc32(data[:body_end])
    if stored != computed:
        raise FormatError(f"header is damaged (CRC-32 mismatch): {_crc_note(stored, computed)}")
    if flags & FLAG_SINGLE:
        header, records = _parse_single_body(data, _FIXED.size, body_end)
        return header, reader.pos, records
    if flags & FLAG_LLM_SINGLE:
        header, record = _parse_llm_single_body(data, _FIXED.size, body_end)
        return header, reader.pos, [record]
    return _parse_header_body(data, _FIXED.size, body_end), reader.pos, None


def _read_compact(data: bytes) -> tuple[Header, int, list[_SingleRecord]]:
    """A COMPACT archive, which must be whole: its one CRC-32, over everything before it, is
    checked before any field is trusted."""
    from nczip.models.registry import known_model

    if len(data) > MAX_COMPACT_ARCHIVE:
        raise FormatError(f"a COMPACT archive is at most {MAX_COMPACT_ARCHIVE} bytes, this one has {len(data)}")
    if len(data) < 4 + 2 + 1 + 1 + COMPACT_CHECK_BYTES + 4:
        raise TruncatedError(f"truncated archive: {len(data)} bytes cannot hold a COMPACT header and its CRC-32")
    stored = _U32.unpack_from(data, len(data) - 4)[0]
    computed = zlib.crc32(memoryview(data)[: len(data) - 4])
    if stored != computed:
        raise FormatError(f"archive is damaged or truncated (CRC-32 mismatch): {_crc_note(stored, computed)}")
    r = _Reader(data, 5, len(data) - 4, _malformed_body)
    ids = r.unpack(_U8, "model and preset")
    original_size = _read_varint(r, "original size")
    token_count = _read_varint(r, "token count")
    check = r.take(COMPACT_CHECK_BYTES, "original SHA-256 prefix")
    model = known_model(id=ids >> 4)
    if model is None:
        raise UnsupportedVersionError(
            f"archive names known model {ids >> 4}, which this nczip does not know (it was written by a newer nczip)"
        )
    if ids & 15 == 0:
        raise FormatError("header is malformed: codec preset 0 does not exist in the COMPACT form")
    payload_size = len(data) - 4 - r.pos
    try:
        method = _check_segment(Method.LLM, original_size, token_count, payload_size)
    except ValueError as e:
        raise FormatError(f"segment 1 of 1 is malformed: {e}") from None
    params = {"codec": COMPACT_PRESET_BASE + (ids & 15), "n_vocab": model.n_vocab}
    header = _checked_header(model.backend, model.name, model.sha256, original_size, check, params)
    payload_crc = zlib.crc32(memoryview(data)[r.pos : len(data) - 4])
    return header, r.pos, [_SingleRecord(method, original_size, token_count, payload_size, payload_crc)]


def _parse_single_body(data: bytes, start: int, end: int) -> tuple[Header, list[_SingleRecord]]:
    r = _Reader(data, start, end, _malformed_body)
    original_size = _read_varint(r, "original size")
    original_sha256 = r.take(32, "original SHA-256")
    records = []
    if original_size:
        method = r.unpack(_U8, "segment method")
        payload_size = _read_varint(r, "payload size")
        crc = r.unpack(_U32, "payload CRC-32")
        if method == Method.LLM:
            raise FormatError("header is malformed: a SINGLE archive cannot hold an LLM segment")
        try:
            method = _check_segment(method, original_size, 0, payload_size)
        except ValueError as e:
            raise FormatError(f"segment 1 of 1 is malformed: {e}") from None
        records.append(_SingleRecord(method, original_size, 0, payload_size, crc))
    _check_consumed(r, end)
    return Header("", "", bytes(32), original_size, original_sha256, Params()), records


def _read_varint(r: _Reader, what: str) -> int:
    value = 0
    for i in range(10):
        byte = r.unpack(_U8, what)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            # One encoding per value: no trailing zero groups, and nothing past 64 bits.
            if (byte == 0 and i > 0) or value > _U64_MAX:
                raise FormatError(f"header is malformed: {what} is not a canonical 64-bit varint")
            return value
    raise FormatError(f"header is malformed: {what} is longer than 10 bytes")


def _parse_header_body(data: bytes, start: int, end: int) -> Header:
    r = _Reader(data, start, end, _malformed_body)
    try:
        backend = r.take(r.unpack(_U8, "backend id length"), "backend id").decode("ascii")
        model_name = r.take(r.unpack(_U16, "model name length"), "model name").decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is malformed: {e}") from None
    model_sha256 = r.take(32, "model SHA-256")
    original_size = r.unpack(_U64, "original size")
    original_sha256 = r.take(32, "original SHA-256")

    params = _read_params(r, r.unpack(_U16, "parameter count"), lambda what: r.unpack(_I64, what))
    _check_consumed(r, end)
    return _checked_header(backend, model_name, model_sha256, original_size, original_sha256, params)


def _parse_llm_single_body(data: bytes, start: int, end: int) -> tuple[Header, _SingleRecord]:
    r = _Reader(data, start, end, _malformed_body)
    try:
        backend = r.take(r.unpack(_U8, "backend id length"), "backend id").decode("ascii")
        name_len = _read_varint(r, "model name length")
        model_name = r.take(name_len, "model name").decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is malformed: {e}") from None
    model_sha256 = r.take(32, "model SHA-256")
    original_size = _read_varint(r, "original size")
    original_sha256 = r.take(32, "original SHA-256")
    params = _read_params(
        r, _read_varint(r, "parameter count"), lambda what: _unzigzag(_read_varint(r, what))
    )
    token_count = _read_varint(r, "token count")
    payload_size = _read_varint(r, "payload size")
    crc = r.unpack(_U32, "payload CRC-32")
    _check_consumed(r, end)
    try:
        method = _check_segment(Method.LLM, original_size, token_count, payload_size)
    except ValueError as e:
        raise FormatError(f"segment 1 of 1 is malformed: {e}") from None
    header = _checked_header(backend, model_name, model_sha256, original_size, original_sha256, params)
    return header, _SingleRecord(method, original_size, token_count, payload_size, crc)


def _read_params(r: _Reader, count: int, read_value) -> Params:
    if count > MAX_PARAMS:
        raise FormatError(f"header is malformed: {count} parameters, the limit is {MAX_PARAMS}")
    params: list[tuple[str, int]] = []
    for i in range(count):
        raw_key = r.take(r.unpack(_U8, f"parameter {i} key length"), f"parameter {i} key")
        value = read_value(f"parameter {i} value")
        key = raw_key.decode("ascii", errors="replace")
        # Strictly increasing keys: no duplicates, and one canonical encoding per header.
        if params and key <= params[-1][0]:
            raise FormatError(
                f"header is malformed: parameter key {key!r} "
                f"does not sort after {params[-1][0]!r}"
            )
        params.append((key, value))
    return Params(params)


def _check_consumed(r: _Reader, end: int) -> None:
    if r.pos != end:
        raise FormatError(
            f"header is malformed: {end - r.pos} unexpected bytes at the end of the header body"
        )


def _checked_header(backend, model_name, model_sha256, original_size, original_sha256, params) -> Header:
    try:
        return Header(backend, model_name, model_sha256, original_size, original_sha256, params)
    except ValueError as e:  # key syntax, printable backend id, ...: the same rules as for callers
        raise FormatError(f"header is malformed: {e}") from None


class _Entry(NamedTuple):
    """One parsed segment table record, with where its payload lies in the file."""

    method: Method
    original_size: int
    token_count: int
    offset: int
    size: int
    crc: int


def _parse_table(data: bytes, table_start: int, header: Header) -> tuple[list[_Entry], int]:
    """The segment table at table_start: its entries (payload offsets from the archive's start)
    and the offset where the payloads end. Checks everything but the file's extent."""
    r = _Reader(data, table_start, len(data), _truncated)
    count = r.unpack(_U32, "segment count")
    if count > MAX_SEGMENTS:
        raise FormatError(
            f"segment table is malformed: {count} segments, the limit is {MAX_SEGMENTS}"
        )
    # Checked against the bytes present before anything is built from the count.
    records = r.take(count * _RECORD.size, f"segment table of {count} records")
    stored = r.unpack(_U32, "segment table CRC-32")
    computed = zlib.crc32(data[table_start : r.pos - 4])
    if stored != computed:
        raise FormatError(
            f"segment table is damaged (CRC-32 mismatch): {_crc_note(stored, computed)}"
        )

    entries: list[_Entry] = []
    offset = r.pos
    for i, record in enumerate(_RECORD.iter_unpack(records)):
        method, original_size, token_count, size, crc = record
        try:
            method = _check_segment(method, original_size, token_count, size)
        except ValueError as e:
            raise FormatError(f"segment {i + 1} of {count} is malformed: {e}") from None
        entries.append(_Entry(method, original_size, token_count, offset, size, crc))
        offset += size  # Python ints: no overflow, and the extent is checked by the caller

    total = sum(e.original_size for e in entries)
    if total != header.original_size:
        raise FormatError(
            f"segment table covers {total} bytes, "
            f"but the header says the original is {header.original_size}"
        )
    if _needs_single_form(header, entries):
        # One encoding per archive: such an archive is written in the SINGLE form only.
        raise FormatError(
            "header is malformed: an archive that names no model and holds at most one "
            "non-LLM segment must take the SINGLE form"
        )
    return entries, offset


def _needs_single_form(header: Header, segments) -> bool:
    return (
        header.backend == "" and header.model_name == "" and header.model_sha256 == bytes(32)
        and not header.params and len(segments) <= 1
        and all(segment.method is not Method.LLM for segment in segments)
    )  # fmt: skip


def _single_entries(records: list[_SingleRecord], offset: int) -> tuple[list[_Entry], int]:
    entries = [_Entry(rec.method, rec.original_size, rec.token_count, offset, rec.payload_size, rec.crc) for rec in records]
    return entries, offset + sum(rec.payload_size for rec in records)


def _read_layout(data: bytes) -> tuple[Header, list[_Entry]]:
    """Everything except the payload CRCs: header, segment table, and the file's exact extent."""
    data = bytes(data)
    header, table_start, single = _read_head(data)
    if single is not None:
        entries, end = _single_entries(single, table_start)
        if is_compact(data):
            end += 4  # the CRC-32 after the payload
    else:
        entries, end = _parse_table(data, table_start, header)
    for i, e in enumerate(entries):
        if e.offset + e.size > len(data):
            remain = max(0, len(data) - e.offset)
            raise _truncated(f"segment {i + 1} of {len(entries)} payload", e.size, e.offset, remain)
    if end != len(data):
        raise FormatError(
            f"{len(data) - end} unexpected bytes after the last segment, at offset {end}"
        )
    return header, entries


class SegmentEntry(NamedTuple):
    """A segment table record as read from a stream: where its payload is and how to check it."""

    method: Method
    original_size: int
    token_count: int
    payload_size: int
    payload_crc: int


def read_prefix(stream: BinaryIO) -> tuple[Header, list[SegmentEntry], BinaryIO]:
    """Read and check the header and segment table from a stream at the archive's start; return
    them and the stream to take the payloads from (read_payload), one by one, so that a reader
    holds only one segment in memory. That is `stream` itself, left at the first payload, except
    for a COMPACT archive: its one CRC-32 at the end covers everything, so it is read whole
    (at most MAX_COMPACT_ARCHIVE bytes) and checked first, and its payload comes from memory.
    """
    prefix = _read_up_to(stream, _FIXED.size)
    if is_compact(prefix):
        data = prefix + _read_up_to(stream, MAX_COMPACT_ARCHIVE + 1 - len(prefix))
        header, start, single = _read_head(data)
        rec = single[0]
        payloads = io.BytesIO(data[start : start + rec.payload_size])
        return header, [SegmentEntry(rec.method, rec.original_size, rec.token_count, rec.payload_size, rec.crc)], payloads
    if len(prefix) == _FIXED.size:
        body_len = _FIXED.unpack_from(prefix)[3]
        if body_len <= MAX_HEADER_BODY:  # else read_header below reports it, reading no more
            prefix += _read_up_to(stream, body_len + 4)
    header, table_start, single = _read_head(prefix)
    if single is not None:
        entries, _ = _single_entries(single, table_start)
    else:
        prefix += _read_up_to(stream, 4)
        if len(prefix) == table_start + 4:
            count = _U32.unpack_from(prefix, table_start)[0]
            if count <= MAX_SEGMENTS:  # else _parse_table reports it
                prefix += _read_up_to(stream, count * _RECORD.size + 4)
        entries, _ = _parse_table(prefix, table_start, header)
    return header, [SegmentEntry(e.method, e.original_size, e.token_count, e.size, e.crc) for e in entries], stream


def read_payload(stream: BinaryIO, entry: SegmentEntry, index: int, count: int) -> bytes:
    """The next payload from a stream after read_prefix, checked against its CRC-32."""
    payload = _read_up_to(stream, entry.payload_size)
    if len(payload) != entry.payload_size:
        raise TruncatedError(
            f"truncated archive: segment {index + 1} of {count} payload needs "
            f"{entry.payload_size} bytes, {len(payload)} remain"
        )
    computed = zlib.crc32(payload)
    if computed != entry.payload_crc:
        raise CorruptSegmentError(
            f"segment {index + 1} of {count} is damaged (CRC-32 mismatch): "
            + _crc_note(entry.payload_crc, computed),
            segment_index=index,
        )
    return payload


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at the end of the stream (raw streams may return short reads)."""
    chunks = []
    while n > 0:
        chunk = stream.read(min(n, 1 << 20))  # bounded reads: a forged size allocates nothing
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _payload_crc(data: bytes, entry: _Entry) -> int:
    return zlib.crc32(memoryview(data)[entry.offset : entry.offset + entry.size])


def read_archive(data: bytes, *, verify_payloads: bool = True) -> Archive:
    """Parse a complete archive. With verify_payloads, every payload CRC is checked up front,
    so damage is reported before any model time is spent."""
    data = bytes(data)
    header, entries = _read_layout(data)
    segments = []
    for i, e in enumerate(entries):
        if verify_payloads:
            computed = _payload_crc(data, e)
            if computed != e.crc:
                raise CorruptSegmentError(
                    f"segment {i + 1} of {len(entries)} is damaged (CRC-32 mismatch): "
                    + _crc_note(e.crc, computed),
                    segment_index=i,
                )
        payload = data[e.offset : e.offset + e.size]
        segments.append(Segment(e.method, e.original_size, e.token_count, payload))
    return Archive(header, tuple(segments))


def damaged_segments(data: bytes) -> list[int]:
    """Indices (0-based) of the segments whose payload CRC fails.

    The header and segment table must be intact and the file complete; otherwise this raises,
    since without them no segment can be located.
    """
    data = bytes(data)
    _, entries = _read_layout(data)
    return [i for i, e in enumerate(entries) if _payload_crc(data, e) != e.crc]


def form_name(data: bytes) -> str:
    """Which form a well-formed archive takes, for messages: version 1 general, SINGLE,
    LLM_SINGLE, or COMPACT."""
    if is_compact(data):
        return "COMPACT"
    flags = _FIXED.unpack_from(data)[2] if len(data) >= _FIXED.size else 0
    return {FLAG_SINGLE: "version 1, SINGLE", FLAG_LLM_SINGLE: "version 1, LLM_SINGLE"}.get(flags, "version 1")


def is_compact(prefix: bytes) -> bool:
    """Whether `prefix` starts a COMPACT archive."""
    return bytes(prefix[:4]) == MAGIC and len(prefix) > 4 and prefix[4] == COMPACT_MARK


def is_archive(prefix: bytes) -> bool:
    """Whether `prefix` starts with the nczip magic (used to refuse recompressing a .ncz file)."""
    return bytes(prefix[:4]) == MAGIC
