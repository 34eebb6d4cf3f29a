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
from typing import Callable, Sequence

import zlib

import numpy as np

from . import _cext
from .ensemble import new_ensemble
from .errors import CorruptSegmentError, DriftError
from .models.llm import LanePrefill, LanguageModel, LockstepLanes
from .params import MAX_LANES, SLIDE_SHIFT, CodecParams, CodingStats  # noqa: F401 (re-exported)

# Progress callbacks receive the token ids coded since the last call.
Progress = Callable[[Sequence[int]], None]


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
    return 0 if steps == 0 or params.check_every == 0 else (steps - 1) // params.check_every + 1


def _fingerprint(rows: Sequence) -> bytes:
    """2 bytes of CRC-32 over the exact float32 bits of a step's logits, lane after lane: any
    difference in the model's arithmetic shows, even one too small to change a frequency yet."""
    crc = 0
    for logits in rows:
        little_endian = np.asarray(logits).astype("<f4", copy=False)  # a no-op view on x86 and ARM
        crc = zlib.crc32(little_endian, crc)
    return (crc & 0xFFFF).to_bytes(CHECKPOINT_BYTES, "little")


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
            # the model's threads are idle while the ensemble runs
            threads = getattr(model, "threads", 1)
            self.ensemble = new_ensemble(params.ensemble, model.n_vocab, lanes, count, threads)

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
    context = LockstepLanes(model, params.window, params.keep, lanes, shift=params.slide == SLIDE_SHIFT)
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


# Rows the encoder gives the head in one call: the head reads its whole matrix (210 MB for
# Gemma-3-270M) per call, so steps of a few lanes are gathered until this many rows.
HEAD_ROWS = 64


def _walk_prefill(model, tokens: Sequence[int], params: CodecParams, code: StepCoder,
                  fan_out: Callable[[], None]) -> None:
    """_walk for the encoder of a batch-invariant model (one with hidden_rows and head: nczip's
    engine): the same schedule and the same code() calls with bit-identical logits, but each
    lane's known tokens are evaluated in blocks (LanePrefill), and the head takes several
    steps' rows at once. The decoder walks with _walk; the tests hold both to the same archives."""
    count = len(tokens)
    primer, lanes = lane_plan(count, params)
    bounds = lane_bounds(count, primer, lanes)
    lengths = [bounds[i + 1] - bounds[i] for i in range(lanes)]
    model.configure(params.window, lanes)
    shift = params.slide == SLIDE_SHIFT
    cursors = [LanePrefill(model, lane, params.window, params.keep, shift) for lane in range(lanes)]

    def run(steps) -> None:
        """steps: (step, token indices, lanes) in order; each coded from its lanes' next rows."""
        batch: list[tuple[int, list[int], list[int]]] = []
        hidden: list[np.ndarray] = []
        for item in steps:
            batch.append(item)
            hidden.extend(cursors[lane].next_hidden() for lane in item[2])
            if len(hidden) >= HEAD_ROWS:
                flush(batch, hidden)
                batch, hidden = [], []
        if batch:
            flush(batch, hidden)

    def flush(batch, hidden) -> None:
        logits = model.head(np.stack(hidden))
        row = 0
        for step, indices, active in batch:
            code(step, logits[row : row + len(active)], indices, active)
            row += len(active)

    if primer:
        first = cursors[0]
        first.start()
        first.feed(tokens[: primer - 1])
        run((i, [i], [0]) for i in range(primer))
        for cursor in cursors[1:]:
            cursor.copy_from(first)
        fan_out()
        for lane, cursor in enumerate(cursors):  # every lane reads the primer's last token first
            cursor.feed([tokens[primer - 1], *tokens[bounds[lane] : bounds[lane + 1] - 1]])
    else:
        for lane, cursor in enumerate(cursors):
            cursor.start()
            cursor.feed(tokens[bounds[lane] : bounds[lane + 1] - 1])

    def lockstep():
        for step in range(max(lengths)):
            active = [lane for lane in range(lanes) if step < lengths[lane]]
            yield primer + step, [bounds[lane] + step for lane in active], active

    run(lockstep())


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
        if params.check_every and step % params.check_every == 0:
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
        if getattr(model, "batch_invariant", False):
            _walk_prefill(model, tokens, params, code, coder.fan_out)
        else:
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
        if params.check_every and step % params.check_every == 0:
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
