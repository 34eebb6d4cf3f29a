"""Where the input is cut into segments.

Each segment is an independent stream (own coder, fresh model context), so a reader can decode
one at a time and a writer can code one as soon as enough input has arrived. The rule is local:
a cut depends only on the bytes up to it, so a streaming writer cuts exactly where the one-shot
path does and both give identical archives.
"""
from __future__ import annotations

from typing import Callable, Iterator

# 1 MiB per segment: a fresh context costs about 3% of one window of tokens, which is nothing at
# this size, while a streaming reader or writer holds at most this much of the original.
SEGMENT_BYTES = 1 << 20


def cut_point(data: bytes | bytearray | memoryview, limit: int | None = None) -> int:
    """Where to end the next segment when more than `limit` bytes are available.

    At `limit`, moved back to the start of a UTF-8 character so no character is split between
    two segments (each segment is tokenized on its own). Binary data without character starts
    nearby is cut at `limit` exactly.
    """
    limit = SEGMENT_BYTES if limit is None else limit
    if len(data) <= limit:
        raise ValueError(f"cut_point needs more than {limit} bytes, got {len(data)}")
    return char_start(data, limit)


def char_start(data: bytes | bytearray | memoryview, pos: int) -> int:
    """`pos` moved back by at most 3 bytes (never to 0) to where a UTF-8 character starts, or
    `pos` itself when no character starts there (binary data)."""
    for cut in range(pos, max(pos - 3, 1) - 1, -1):
        if data[cut] & 0xC0 != 0x80:  # not a continuation byte: a character starts here
            return cut
    return pos


def split(data: bytes, limit: int | None = None) -> Iterator[memoryview]:
    """The segments of `data`, in order; none empty, each at most `limit` bytes."""
    limit = SEGMENT_BYTES if limit is None else limit
    view = memoryview(data)
    while len(view) > limit:
        cut = cut_point(view, limit)
        yield view[:cut]
        view = view[cut:]
    if len(view):
        yield view


def split_stream(read: Callable[[int], bytes], limit: int | None = None) -> Iterator[bytes]:
    """The segments of what `read(n)` returns until it returns b"", exactly as split() cuts the
    whole; at most two segments' worth is held at a time."""
    limit = SEGMENT_BYTES if limit is None else limit
    pending = bytearray()
    while True:
        chunk = read(limit)
        pending += chunk
        while len(pending) > limit:
            cut = cut_point(pending, limit)
            yield bytes(pending[:cut])
            del pending[:cut]
        if not chunk:
            break
    if pending:
        yield bytes(pending)
