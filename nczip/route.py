"""Which parts of a segment are text for the LLM and which are binary for zstd or lzma.

Decided by a cheap scan before any model runs, so a large binary never spends an hour in the
model. The scan labels 512-byte blocks (a tar header is one block), then smooths the labels:
short binary islands inside text stay with the text (each cut restarts the model's context,
which costs more than coding a few odd bytes), and short text runs go with the binary around
them. Like segment.py's cuts, the plan depends only on the bytes it is given, so a streaming
writer routes every segment exactly as the one-shot path does.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from .segment import char_start

BLOCK = 512
# A block is binary when more than 1% of its bytes are control bytes (NUL included) or bytes
# that are not part of valid UTF-8: plain text has neither; a tar header, a protobuf or a JPEG
# have far more.
MAX_ODD_PER_BLOCK = BLOCK // 100
# Binary runs shorter than this inside text are coded by the LLM with the text around them.
MIN_BINARY = 2048
# Text runs shorter than this are coded with the binary around them: a fresh model context needs
# some text to pay for itself.
MIN_TEXT = 4096
# In a segment that is mostly binary (a PDF, an executable), text runs shorter than this go with
# the binary too: the LLM codes ~0.3 KB/s, zstd ~3 MB/s, and a few KB of text saved at most a few
# hundred bytes. Blocks of one repeated byte (tar's end padding) count for neither side.
MIN_TEXT_IN_BINARY = 64 * 1024

# Control bytes except tab, line feed, vertical tab, form feed, carriage return and escape.
_CONTROL = bytes([*range(0, 9), *range(14, 27), *range(28, 32), 127])
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)


@dataclass(frozen=True)
class Span:
    """data[start:end], to be coded as text (LLM) or as binary."""

    start: int
    end: int
    text: bool

    def __len__(self) -> int:
        return self.end - self.start


def odd_bytes(block: bytes | memoryview) -> int:
    """Control bytes plus bytes of invalid UTF-8 in `block`; a character cut by either edge of
    the block is not an error and is not counted."""
    block = bytes(block)
    control = len(block) - len(block.translate(None, _CONTROL))
    lead = 0  # continuation bytes of a character that began before the block
    while lead < min(3, len(block)) and block[lead] & 0xC0 == 0x80:
        lead += 1
    trail = 0  # the start of a character that ends after the block
    for i in range(len(block) - 1, max(len(block) - 4, lead - 1), -1):
        byte = block[i]
        if byte & 0xC0 != 0x80:
            needs = 1 if 0xC0 <= byte < 0xE0 else 2 if 0xE0 <= byte < 0xF0 else 3 if 0xF0 <= byte < 0xF8 else 0
            if len(block) - 1 - i < needs:
                trail = len(block) - i
            break
    core = block[lead : len(block) - trail]
    # Decoding drops exactly the invalid bytes; re-encoding gives back every valid one.
    invalid = len(core) - len(core.decode("utf-8", "ignore").encode("utf-8"))
    return control + invalid


def is_text_block(block: bytes | memoryview) -> bool:
    limit = max(1, len(block) * MAX_ODD_PER_BLOCK // BLOCK)
    return odd_bytes(block) <= limit


def plan(data: bytes | memoryview) -> list[Span]:
    """The spans of `data`, in order, covering it exactly; adjacent spans differ in kind."""
    size = len(data)
    if size == 0:
        return []
    view = memoryview(data)
    blocks = [view[i : i + BLOCK] for i in range(0, size, BLOCK)]
    labels = [is_text_block(block) for block in blocks]
    uniform = sum(1 for block in blocks if block.tobytes().count(block[:1].tobytes()) == len(block))
    runs = _merge((label, 1) for label in labels)
    runs = _absorb(runs, kind=False, shorter_than=MIN_BINARY // BLOCK)
    runs = _absorb(runs, kind=True, shorter_than=MIN_TEXT // BLOCK)
    text_blocks = sum(n for text, n in runs if text)
    if text_blocks * 2 < len(labels) - uniform:
        runs = _absorb(runs, kind=True, shorter_than=MIN_TEXT_IN_BINARY // BLOCK)
    bounds = [0]
    for _, n in runs:
        bounds.append(min(size, bounds[-1] + n * BLOCK))
    # Inner cuts move back to a character start, so no character is split across spans.
    bounds[1:-1] = [char_start(view, cut) for cut in bounds[1:-1]]
    return [Span(start, end, text) for (text, _), start, end in zip(runs, bounds, bounds[1:])]


def _merge(runs) -> list[tuple[bool, int]]:
    """Adjacent (kind, blocks) runs of the same kind joined into one."""
    return [(text, sum(n for _, n in group)) for text, group in groupby(runs, key=lambda run: run[0])]


def _absorb(runs: list[tuple[bool, int]], *, kind: bool, shorter_than: int) -> list[tuple[bool, int]]:
    """Relabel runs of `kind` shorter than `shorter_than` blocks as the other kind, then merge.

    A run at either end of the segment is relabelled too, except when it is the only run."""
    if len(runs) <= 1:
        return runs
    return _merge((not text if text == kind and n < shorter_than else text, n) for text, n in runs)
