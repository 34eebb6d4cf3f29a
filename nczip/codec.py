"""The coding loop for one LLM segment: model logits -> integer CDF -> range coder.

Encoder and decoder walk the same SlidingWindow, so they make the same model calls with the same
batch shapes and get the same floats; the C extension turns those floats into the same integer
frequencies on both sides (see cext/cdf.c).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import zlib

import numpy as np

from . import _cext
from .errors import CorruptSegmentError, DriftError
from .models.llm import LanguageModel, SlidingWindow

# Progress callbacks receive the token ids coded since the last call.
Progress = Callable[[Sequence[int]], None]
_PROGRESS_EVERY = 16


@dataclass(frozen=True)
class CodecParams:
    """Every number that changes the coded bits; all of them go into the archive header."""

    window: int = 4096  # tokens in the context, BOS included: chosen by bench/window_sizes.py
    keep: int = 2048  # tokens kept when the window slides
    cdf_bits: int = 31  # the integer CDF sums to 2**cdf_bits
    # A 2-byte checkpoint of the logits at token 0 and every check_every tokens: 16 bits per
    # ~14,000 coded bits (4096 tokens at ~3.5 bits) is 0.11% of the archive.
    check_every: int = 4096

    def __post_init__(self):
        if not 2 <= self.window <= 1 << 17:
            raise ValueError(f"window must be in 2..131072 tokens, got {self.window}")
        if not 1 <= self.keep <= self.window - 2:
            raise ValueError(f"keep must be in 1..{self.window - 2} (window - 2), got {self.keep}")
        if not 20 <= self.cdf_bits <= 31:
            raise ValueError(f"cdf_bits must be in 20..31, got {self.cdf_bits}")
        if not 1 <= self.check_every <= 1 << 30:
            raise ValueError(f"check_every must be in 1..{1 << 30} tokens, got {self.check_every}")


CHECKPOINT_BYTES = 2


def checkpoint_count(tokens: int, params: CodecParams) -> int:
    """Checkpoints in a segment of `tokens` tokens: at token 0, check_every, 2*check_every, ..."""
    return 0 if tokens == 0 else (tokens - 1) // params.check_every + 1


def _fingerprint(logits) -> bytes:
    """2 bytes of CRC-32 over the exact float32 bits: any difference in the model's arithmetic
    shows, even one too small to change a frequency yet."""
    little_endian = np.asarray(logits).astype("<f4", copy=False)  # a no-op view on x86 and ARM
    return (zlib.crc32(little_endian) & 0xFFFF).to_bytes(CHECKPOINT_BYTES, "little")


@dataclass
class CodingStats:
    """Measured while coding; never influences the bits."""

    tokens: int = 0
    ideal_bits: float = 0.0  # -sum log2 p under the float distribution (only when measured)
    seconds: float = 0.0
    measure_ideal: bool = False


def encode_tokens(
    model: LanguageModel,
    tokens: Sequence[int],
    params: CodecParams,
    *,
    progress: Progress | None = None,
    stats: CodingStats | None = None,
) -> bytes:
    encoder = _cext.Encoder()
    window = SlidingWindow(model, params.window, params.keep)
    started = time.perf_counter()
    logits = window.start()
    checkpoints = bytearray()
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        if i % params.check_every == 0:
            checkpoints += _fingerprint(logits)
        if stats is not None and stats.measure_ideal:
            stats.ideal_bits += _cext.ideal_bits(logits, token)
        encoder.encode_logits(logits, token, params.cdf_bits)
        if i != last:  # the prediction after the final token would never be used
            logits = window.advance(token)
        if progress is not None and (i + 1) % _PROGRESS_EVERY == 0:
            progress(tokens[i + 1 - _PROGRESS_EVERY : i + 1])
    if progress is not None and len(tokens) % _PROGRESS_EVERY:
        progress(tokens[len(tokens) - len(tokens) % _PROGRESS_EVERY :])
    if stats is not None:
        stats.tokens += len(tokens)
        stats.seconds += time.perf_counter() - started
    # The checkpoints go last: their count follows from the token count, so no length is stored.
    return encoder.finish() + bytes(checkpoints)


def decode_tokens(
    model: LanguageModel,
    payload: bytes,
    count: int,
    params: CodecParams,
    *,
    segment_index: int = 0,
    progress: Progress | None = None,
) -> list[int]:
    n_check = checkpoint_count(count, params) * CHECKPOINT_BYTES
    if len(payload) < n_check + 1:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} is damaged: {len(payload)} payload bytes cannot hold "
            f"{count} tokens and their {n_check // CHECKPOINT_BYTES} checkpoints",
            segment_index,
        )
    stream, checkpoints = payload[: len(payload) - n_check], payload[len(payload) - n_check :]
    decoder = _cext.Decoder(stream)
    window = SlidingWindow(model, params.window, params.keep)
    logits = window.start()
    tokens: list[int] = []
    try:
        for i in range(count):
            if i % params.check_every == 0:
                k = i // params.check_every
                if _fingerprint(logits) != checkpoints[k * CHECKPOINT_BYTES : (k + 1) * CHECKPOINT_BYTES]:
                    raise DriftError(
                        f"segment {segment_index + 1}: the model's predictions differ from the encoder's "
                        f"at token {i} (checkpoint {k + 1}); this model file, llama.cpp build or CPU "
                        "computes different floats than the one that compressed the archive",
                        segment_index,
                        i,
                    )
            token = decoder.decode_logits(logits, params.cdf_bits)
            tokens.append(token)
            if i != count - 1:
                logits = window.advance(token)
            if progress is not None and (i + 1) % _PROGRESS_EVERY == 0:
                progress(tokens[i + 1 - _PROGRESS_EVERY :])
    except _cext.CoderError as exc:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} does not decode at token {len(tokens)}: {exc}", segment_index
        ) from None
    if progress is not None and count % _PROGRESS_EVERY:
        progress(tokens[count - count % _PROGRESS_EVERY :])
    # The decoder reads 8 bytes ahead and the encoder's tail is 1..8 bytes, so a clean stream
    # ends with every payload byte consumed and at most 7 zero bytes read past the end.
    if decoder.position != len(stream) or decoder.overrun > 7:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} is damaged: its coded stream does not end where the "
            f"token count says (read {decoder.position} of {len(stream)} bytes, {decoder.overrun} past the end)",
            segment_index,
        )
    return tokens
