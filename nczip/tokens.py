"""Lossless tokenization: token ids whose byte pieces concatenate to the input exactly.

A tokenizer is not trusted to be reversible. Valid UTF-8 runs go through the model's own
tokenizer and the result is checked piece by piece; whatever does not round-trip (invalid UTF-8,
text the tokenizer normalizes, anything surprising) is coded with the model's byte tokens
(<0x00>..<0xFF> in Gemma). The decoder never tokenizes: it only concatenates pieces, so
tokenization choices here never need to be repeated or recorded.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator, Protocol, Sequence

# Long runs are tokenized in pieces so the tokenizer's cost stays linear; cutting at a newline
# costs at most a token per cut.
MAX_RUN_BYTES = 1 << 16
# Below this size a run that fails to round-trip is coded byte by byte instead of split further.
MIN_SPLIT_BYTES = 16

_INVALID_UTF8 = re.compile("[\udc80-\udcff]+")


class Tokenizer(Protocol):
    def tokenize(self, text: bytes) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def byte_token(self, value: int) -> int: ...


def tokenize_exact(data: bytes, model: Tokenizer) -> list[int]:
    """Token ids for `data`; their pieces concatenate to `data` exactly (checked)."""
    ids: list[int] = []
    for run, valid in _utf8_runs(data):
        if valid:
            for chunk in _chunks(run):
                ids.extend(_tokenize_checked(chunk, model))
        else:
            ids.extend(model.byte_token(b) for b in run)
    if detokenize(ids, model) != data:  # cheap next to the model; the decoder relies on it
        raise RuntimeError("internal error: tokenization does not reproduce the input")
    return ids


def detokenize(ids: Iterable[int], model: Tokenizer) -> bytes:
    return b"".join(model.piece(t) for t in ids)


def _utf8_runs(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """Split into maximal valid-UTF-8 runs and runs of bytes that are not valid UTF-8."""
    text = data.decode("utf-8", errors="surrogateescape")
    pos = 0
    for m in _INVALID_UTF8.finditer(text):
        if m.start() > pos:
            yield text[pos : m.start()].encode("utf-8"), True
        yield m.group().encode("utf-8", errors="surrogateescape"), False
        pos = m.end()
    if pos < len(text):
        yield text[pos:].encode("utf-8"), True


def _chunks(run: bytes) -> Iterator[bytes]:
    """Cut long runs after a newline (or, failing that, at a UTF-8 character boundary)."""
    while len(run) > MAX_RUN_BYTES:
        cut = run.rfind(b"\n", MAX_RUN_BYTES // 2, MAX_RUN_BYTES) + 1
        if cut <= 0:
            cut = MAX_RUN_BYTES
            while run[cut] & 0xC0 == 0x80:  # do not split a multi-byte character
                cut -= 1
        yield run[:cut]
        run = run[cut:]
    if run:
        yield run


def _tokenize_checked(text: bytes, model: Tokenizer) -> list[int]:
    ids = model.tokenize(text)
    if _pieces_match(ids, text, model):
        return ids
    if len(text) <= MIN_SPLIT_BYTES:
        return [model.byte_token(b) for b in text]
    # Split in the middle at a character boundary and try each half on its own.
    mid = len(text) // 2
    while mid > 0 and text[mid] & 0xC0 == 0x80:
        mid -= 1
    if mid == 0:
        return [model.byte_token(b) for b in text]
    return _tokenize_checked(text[:mid], model) + _tokenize_checked(text[mid:], model)


def _pieces_match(ids: Sequence[int], text: bytes, model: Tokenizer) -> bool:
    pos = 0
    for t in ids:
        piece = model.piece(t)
        if not piece or text[pos : pos + len(piece)] != piece:
            return False  # an empty piece (a control token) would be invisible to the decoder
        pos += len(piece)
    return pos == len(text)
