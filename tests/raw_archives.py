"""Archives built byte by byte with struct, not with nczip's writer: what the container tests
and the CLI's compatibility tests feed the reader (docs/format.md's layouts)."""
from __future__ import annotations

import hashlib
import struct
import zlib

from nczip.container import MAGIC

ZERO32 = bytes(32)


def raw_header(body, *, version=1, flags=0, body_len=None):
    fixed = MAGIC + struct.pack("<HHI", version, flags, len(body) if body_len is None else body_len)
    return fixed + body + struct.pack("<I", zlib.crc32(fixed + body))


def raw_body(*, backend=b"t", name=b"", model=ZERO32, size=0, sha=None, params=(), count=None):
    sha = hashlib.sha256(b"").digest() if sha is None else sha
    out = struct.pack("<B", len(backend)) + backend + struct.pack("<H", len(name)) + name
    out += model + struct.pack("<Q", size) + sha
    out += struct.pack("<H", len(params) if count is None else count)
    for key, value in params:
        out += struct.pack("<B", len(key)) + key + struct.pack("<q", value)
    return out


def varint(value):
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value >> 7 else 0))
        value >>= 7
        if not value:
            return bytes(out)


def raw_single(size, sha, record=None, payload=b"", *, flags=1):
    """A SINGLE-form archive; record = (method, payload size, crc) or None for an empty original."""
    body = varint(size) + sha
    if record is not None:
        method, payload_size, crc = record
        body += struct.pack("<B", method) + varint(payload_size) + struct.pack("<I", crc)
    return raw_header(body, flags=flags) + payload


def raw_table(records, *, count=None):
    table = struct.pack("<I", len(records) if count is None else count)
    table += b"".join(struct.pack("<BQQQI", *r) for r in records)
    return table + struct.pack("<I", zlib.crc32(table))


def raw_archive(segments, *, size=None):
    """segments: (method, original size, token count, payload); CRCs filled in."""
    total = sum(s[1] for s in segments) if size is None else size
    records = [(m, o, t, len(p), zlib.crc32(p)) for m, o, t, p in segments]
    return raw_header(raw_body(size=total)) + raw_table(records) + b"".join(s[3] for s in segments)
