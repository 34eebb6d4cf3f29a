"""The coding loop for one LLM segment: model logits -> integer CDF -> range coder.

A segment's tokens are split into lanes (contiguous runs) that are coded in lockstep: one model
call per step evaluates the next token of every lane, which is what makes a 2-core CPU fast
(llama.cpp does 16 rows in far less than 16 times one row's time). The coder interleaves the
lanes' symbols step by step, in lane order. Encoder and decoder walk the same schedule, so they
make the same model calls with the same batch shapes and get the same floats; the C extension
turns those floats into the same integer frequencies on both sides (see cext/cdf.c).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import zlib

import numpy as np

from . import _cext
from .ensemble import EnsembleParams, new_ensemble
from .errors import CorruptSegmentError, DriftError
from .models.llm import LanguageModel, LockstepLanes

# Progress callbacks receive the token ids coded since the last call.
Progress = Callable[[Sequence[int]], None]


@dataclass(frozen=True)
class CodecParams:
    """Every number that changes the coded bits; all of them go into the archive header."""

    window: int = 4096  # tokens in each lane's context, BOS included: chosen by bench/window_sizes.py
    keep: int = 2048  # tokens kept when a lane's window slides
    cdf_bits: int = 31  # the integer CDF sums to 2**cdf_bits
    # A 2-byte checkpoint of the logits at step 0 and every check_every steps (a step codes one
    # token in each lane): 16 bits per >= 4096 tokens at ~3.5 bits is <= 0.11% of the archive.
    check_every: int = 4096
    # Lockstep lanes (bench/lanes.py; README "Speed"): 16 lanes of >= 2048 tokens after a 512-token
    # primer cost alice29 2.1% more bits than one lane, in return for ~2x the speed.
    lanes: int = 16  # the most lanes a segment is split into, coded in lockstep
    lane_tokens: int = 2048  # the fewest tokens a lane gets: shorter segments get fewer lanes
    primer: int = 512  # tokens lane 0 codes alone first, the shared start of every lane's context
    # The cheap models and the mixer beside the LLM; None codes with the LLM alone (--llm-only).
    ensemble: EnsembleParams | None = field(default_factory=EnsembleParams)

    def __post_init__(self):
        if not 2 <= self.window <= 1 << 17:
            raise ValueError(f"window must be in 2..131072 tokens, got {self.window}")
        if not 1 <= self.keep <= self.window - 2:
            raise ValueError(f"keep must be in 1..{self.window - 2} (window - 2), got {self.keep}")
        if not 20 <= self.cdf_bits <= 31:
            raise ValueError(f"cdf_bits must be in 20..31, got {self.cdf_bits}")
        if not 1 <= self.check_every <= 1 << 30:
            raise ValueError(f"check_every must be in 1..{1 << 30} steps, got {self.check_every}")
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}, got {self.lanes}")
        if not 1 <= self.lane_tokens <= 1 << 30:
            raise ValueError(f"lane_tokens must be in 1..{1 << 30}, got {self.lane_tokens}")
        if not 0 <= self.primer <= 1 << 30:
            raise ValueError(f"primer must be in 0..{1 << 30}, got {self.primer}")


# Rows per evaluation call stay within llama.cpp's batch (512) and its sequence limit (256).
MAX_LANES = 256
CHECKPOINT_BYTES = 2


def lane_plan(tokens: int, params: CodecParams) -> tuple[int, int]:
    """(primer, lanes) for a segment of `tokens` tokens.

    With more than one lane, lane 0 first codes the first `primer` tokens alone; then every lane
    starts from that context, and the rest is split into lanes of >= lane_tokens tokens each.
    The primer is at most half a window, so that lanes have room for their own tokens."""
    primer = min(params.primer, params.window // 2)
    rest = tokens - primer
    lanes = min(params.lanes, rest // params.lane_tokens) if rest > 0 else 1
    return (0, 1) if lanes <= 1 else (primer, lanes)


def lane_bounds(tokens: int, primer: int, lanes: int) -> list[int]:
    """Lane i codes tokens[bounds[i]:bounds[i + 1]] after the primer: contiguous runs whose
    lengths differ by <= 1."""
    return [primer + i * (tokens - primer) // lanes for i in range(lanes + 1)]


def step_count(tokens: int, params: CodecParams) -> int:
    """Coding steps for a segment: the primer's tokens one by one, then the longest lane."""
    if tokens == 0:
        return 0
    primer, lanes = lane_plan(tokens, params)
    return primer + -(-(tokens - primer) // lanes)


def checkpoint_count(tokens: int, params: CodecParams) -> int:
    """Checkpoints in a segment: at step 0, check_every, 2*check_every, ..."""
    steps = step_count(tokens, params)
    return 0 if steps == 0 else (steps - 1) // params.check_every + 1


def _fingerprint(rows: Sequence) -> bytes:
    """2 bytes of CRC-32 over the exact float32 bits of a step's logits, lane after lane: any
    difference in the model's arithmetic shows, even one too small to change a frequency yet."""
    crc = 0
    for logits in rows:
        little_endian = np.asarray(logits).astype("<f4", copy=False)  # a no-op view on x86 and ARM
        crc = zlib.crc32(little_endian, crc)
    return (crc & 0xFFFF).to_bytes(CHECKPOINT_BYTES, "little")


@dataclass
class CodingStats:
    """Measured while coding; never influences the bits."""

    tokens: int = 0
    ideal_bits: float = 0.0  # -sum log2 p under the float distribution (only when measured)
    seconds: float = 0.0
    measure_ideal: bool = False


# code(step, logits rows, token indices, lanes) codes one step's tokens, one per row, and
# returns them.
StepCoder = Callable[[int, Sequence[np.ndarray], Sequence[int], Sequence[int]], Sequence[int]]


class _TokenCoder:
    """Codes one token from its logits: the LLM alone, or the ensemble (same calls on both
    sides, so encoder and decoder keep identical models)."""

    def __init__(self, model: LanguageModel, count: int, params: CodecParams):
        self.precision = params.cdf_bits
        self.ensemble = None
        if params.ensemble is not None and count:
            _, lanes = lane_plan(count, params)
            self.ensemble = new_ensemble(params.ensemble, model.n_vocab, lanes, count)

    def fan_out(self) -> None:
        if self.ensemble is not None:
            self.ensemble.fan_out()

    def encode(self, encoder, lane: int, index: int, logits, token: int) -> None:
        if self.ensemble is None:
            encoder.encode_logits(logits, token, self.precision)
        else:
            self.ensemble.encode(encoder, lane, index, logits, token, self.precision)

    def decode(self, decoder, lane: int, index: int, logits) -> int:
        if self.ensemble is None:
            return decoder.decode_logits(logits, self.precision)
        return self.ensemble.decode(decoder, lane, index, logits, self.precision)


def _walk(model: LanguageModel, count: int, params: CodecParams, code: StepCoder, fan_out: Callable[[], None]) -> None:
    """Drive the model through a segment's schedule, the same for encoder and decoder: the
    primer on lane 0 alone, then every lane in lockstep (docs/format.md, "Lanes")."""
    primer, lanes = lane_plan(count, params)
    bounds = lane_bounds(count, primer, lanes)
    lengths = [bounds[i + 1] - bounds[i] for i in range(lanes)]
    model.configure(params.window, lanes)
    context = LockstepLanes(model, params.window, params.keep, lanes)
    if primer:
        logits = context.start(1)
        for i in range(primer):
            (token,) = code(i, logits, [i], [0])
            if i + 1 < primer:
                logits = context.advance([0], [token])
        context.fan_out()
        fan_out()
        # Every lane reads the primer's last token: each row predicts its lane's first token.
        logits = context.advance(range(lanes), [token] * lanes)
    else:
        logits = context.start()
    for step in range(max(lengths)):
        active = [lane for lane in range(lanes) if step < lengths[lane]]
        coded = code(primer + step, logits, [bounds[lane] + step for lane in active], active)
        going = [i for i, lane in enumerate(active) if step + 1 < lengths[lane]]
        if going:
            logits = context.advance([active[i] for i in going], [coded[i] for i in going])


def encode_tokens(
    model: LanguageModel,
    tokens: Sequence[int],
    params: CodecParams,
    *,
    progress: Progress | None = None,
    stats: CodingStats | None = None,
) -> bytes:
    encoder = _cext.Encoder()
    started = time.perf_counter()
    checkpoints = bytearray()
    measure = stats is not None and stats.measure_ideal
    coder = _TokenCoder(model, len(tokens), params)

    def code(step: int, rows: Sequence[np.ndarray], indices: Sequence[int], lanes: Sequence[int]) -> list[int]:
        nonlocal checkpoints
        if step % params.check_every == 0:
            checkpoints += _fingerprint(rows)
        coded = [tokens[i] for i in indices]
        for row, token, index, lane in zip(rows, coded, indices, lanes):
            if measure:
                stats.ideal_bits += _cext.ideal_bits(row, token)
            coder.encode(encoder, lane, index, row, token)
        if progress is not None:
            progress(coded)
        return coded

    if tokens:
        _walk(model, len(tokens), params, code, coder.fan_out)
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
    out = [0] * count
    done = 0
    coder = _TokenCoder(model, count, params)

    def code(step: int, rows: Sequence[np.ndarray], indices: Sequence[int], lanes: Sequence[int]) -> list[int]:
        nonlocal done
        if step % params.check_every == 0:
            k = step // params.check_every
            if _fingerprint(rows) != checkpoints[k * CHECKPOINT_BYTES : (k + 1) * CHECKPOINT_BYTES]:
                where = f"token {indices[0]}" if len(rows) == 1 else f"step {step} (tokens {', '.join(map(str, indices[:3]))}, ...)"
                raise DriftError(
                    f"segment {segment_index + 1}: the model's predictions differ from the encoder's "
                    f"at {where}, checkpoint {k + 1}; this model file, llama.cpp build or CPU computes "
                    "different floats than the one that compressed the archive",
                    segment_index,
                    indices[0],
                )
        coded = []
        for row, index, lane in zip(rows, indices, lanes):
            token = coder.decode(decoder, lane, index, row)
            out[index] = token
            coded.append(token)
        done += len(coded)
        if progress is not None:
            progress(coded)
        return coded

    try:
        if count:
            _walk(model, count, params, code, coder.fan_out)
    except _cext.CoderError as exc:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} does not decode at token {done}: {exc}", segment_index
        ) from None
    _check_stream_end(decoder, stream, segment_index)
    return out


def _check_stream_end(decoder, stream: bytes, segment_index: int) -> None:
    # The decoder reads 8 bytes ahead and the encoder's tail is 1..8 bytes, so a clean stream
    # ends with every payload byte consumed and at most 7 zero bytes read past the end.
    if decoder.position != len(stream) or decoder.overrun > 7:
        raise CorruptSegmentError(
            f"segment {segment_index + 1} is damaged: its coded stream does not end where the "
            f"token count says (read {decoder.position} of {len(stream)} bytes, {decoder.overrun} past the end)",
            segment_index,
        )
