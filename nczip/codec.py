"""The coding loop for one LLM segment: model logits -> integer CDF -> range coder.

Encoder and decoder walk the same SlidingWindow, so they make the same model calls with the same
batch shapes and get the same floats; the C extension turns those floats into the same integer
frequencies on both sides (see cext/cdf.c).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import _cext
from .errors import CorruptSegmentError
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

    def __post_init__(self):
        if not 2 <= self.window <= 1 << 17:
            raise ValueError(f"window must be in 2..131072 tokens, got {self.window}")
        if not 1 <= self.keep <= self.window - 2:
            raise ValueError(f"keep must be in 1..{self.window - 2} (window - 2), got {self.keep}")
        if not 20 <= self.cdf_bits <= 31:
            raise ValueError(f"cdf_bits must be in 20..31, got {self.cdf_bits}")


@dataclass
class CodingStats:
    """Measured while coding; never influences the bits."""

    tokens: int = 0
    ideal_bits: float = 0.0  # -sum log2 p under the float distribution (only when measured)
    seconds: float = 0.0
    measure_ideal: bool = False
    _started: float = field(default=0.0, repr=False)


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
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
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
    return encoder.finish()


def decode_tokens(
    model: LanguageModel,
    payload: bytes,
    count: int,
    params: CodecParams,
    *,
    segment_index: int = 0,
    progress: Progress | None = None,
) -> list[int]:
    decoder = _cext.Decoder(payload)
    window = SlidingWindow(model, params.window, params.keep)
    logits = window.start()
    tokens: list[int] = []
    try:
        for i in range(count):
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
    if decoder.position != len(payload) or decoder.overrun > 7:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} is damaged: its coded stream does not end where the "
            f"token count says (read {decoder.position} of {len(payload)} bytes, {decoder.overrun} past the end)",
            segment_index,
        )
    return tokens
