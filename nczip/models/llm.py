"""The predictor protocol the codec drives, and the context window both coder sides share.

Decoding is only correct if the decoder computes bit-identical logits, and backends give different
floats for different batch shapes. So the codec never talks to a model directly: it goes through
LockstepLanes, which turns "the next tokens are t..." into exactly the same sequence of evaluation
calls on the encoder and the decoder, slides included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class ModelIdentity:
    """What an archive records so that only the same model decodes it."""

    backend: str  # e.g. "llama.cpp"
    name: str  # file name, for messages only
    sha256: bytes  # SHA-256 of the model file: the identity that is checked


class LanguageModel(Protocol):
    """A deterministic next-token predictor over one or more lanes (independent sequences).

    The same sequence of calls must give bit-identical logits, whatever the thread count.
    """

    identity: ModelIdentity
    n_vocab: int
    bos: int
    n_ctx: int  # positions each lane can hold
    n_lanes: int  # lanes the current context holds
    n_batch: int  # tokens (rows) per evaluation call

    def configure(self, n_ctx: int, n_lanes: int) -> None:
        """Empty context(s) for n_lanes lanes of at least n_ctx positions each."""

    def reset(self) -> None:
        """Forget every lane."""

    def clear_lane(self, lane: int) -> None:
        """Forget one lane."""

    def copy_lane(self, source: int, target: int) -> None:
        """Make lane `target` hold exactly what lane `source` holds (same cells, same floats)."""

    def shift_lane(self, lane: int, start: int, end: int) -> None:
        """Forget a lane's positions [start, end) and move its later positions down by
        end - start, their cached keys re-rotated to the new positions (not recomputed)."""

    def evaluate(self, tokens: Sequence[int], start: int, lane: int = 0) -> np.ndarray:
        """Append tokens to a lane at positions start.. (in n_batch chunks) and return float32
        logits after the last one.

        The returned array may be a view into backend memory, valid until the next call.
        """

    def evaluate_rows(self, tokens: Sequence[int], positions: Sequence[int], lanes: Sequence[int]) -> np.ndarray:
        """One call: append tokens[i] to lanes[i] at positions[i]; logits of every row, (rows, vocab)."""

    def tokenize(self, text: bytes) -> list[int]:
        """The model's own tokenization of valid UTF-8 text (no BOS, no special-token parsing)."""

    def piece(self, token: int) -> bytes:
        """The exact bytes a token stands for."""

    def byte_token(self, value: int) -> int:
        """The token that stands for the single byte `value` (byte fallback)."""

    def close(self) -> None:
        """Release the backend's memory."""


class VocabularyOf:
    """The vocabulary part of LanguageModel, answered by the model's `vocab` object (a GGUF's
    llama.cpp vocabulary or a directory's HfVocab): both backends mix it in."""

    vocab: "Vocabulary"

    def tokenize(self, text: bytes) -> list[int]:
        return self.vocab.tokenize(text)

    def piece(self, token: int) -> bytes:
        return self.vocab.piece(token)

    def byte_token(self, value: int) -> int:
        return self.vocab.byte_token(value)


class Vocabulary(Protocol):
    n_vocab: int
    bos: int

    def tokenize(self, text: bytes) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def byte_token(self, value: int) -> int: ...


class LockstepLanes:
    """Feeds n lanes to a model in lockstep: one evaluation call per step, one row per lane.

    Each lane has a window of its own with BOS at position 0. When a lane's window is full, it
    goes on from BOS + its last `keep` tokens: with `shift`, the model drops the oldest tokens
    after BOS from its cache and moves the rest down (no evaluation), and the token just coded is
    the lane's row of the step call as usual; otherwise the lane restarts, prefilled with BOS +
    its last `keep` tokens in n_batch chunks by a call of its own (before the step's row call).
    Gemma loses about 3% without its BOS at the window start, so it is kept. Batched rows give other floats than single rows, which is fine because the
    encoder and the decoder make exactly the same calls: lanes, order and shapes follow from the
    token counts alone.
    """

    def __init__(self, model: LanguageModel, window: int, keep: int, n_lanes: int = 1, shift: bool = False):
        if not 2 <= window <= model.n_ctx:
            raise ValueError(f"window must be in 2..{model.n_ctx}, got {window}")
        if not 1 <= keep <= window - 2:
            raise ValueError(f"keep must be in 1..{window - 2}, got {keep}")
        if not 1 <= n_lanes <= model.n_lanes:
            raise ValueError(f"n_lanes must be in 1..{model.n_lanes}, got {n_lanes}")
        self.model = model
        self.window = window
        self.keep = keep
        self.n_lanes = n_lanes
        self.shift = shift
        self._recent: list[list[int]] = [[] for _ in range(n_lanes)]
        self._filled = [0] * n_lanes

    def start(self, lanes: int | None = None) -> list[np.ndarray]:
        """Begin: the logits that predict the first token of lanes 0..lanes-1 (all lanes by
        default), from one call of BOS rows. The other lanes stay empty (see fan_out)."""
        self.model.reset()
        n = self.n_lanes if lanes is None else lanes
        self._recent = [[] for _ in range(self.n_lanes)]
        self._filled = [1] * n + [0] * (self.n_lanes - n)
        rows = self.model.evaluate_rows([self.model.bos] * n, [0] * n, range(n))
        return [rows[i] for i in range(n)]

    def fan_out(self) -> None:
        """Give every other lane lane 0's context: the primer that lane 0 coded alone becomes
        the shared beginning of all lanes (a cold lane costs ~3% more bits than a primed one)."""
        for lane in range(1, self.n_lanes):
            self.model.copy_lane(0, lane)
            self._filled[lane] = self._filled[0]
            self._recent[lane] = list(self._recent[0])

    def advance(self, lanes: Sequence[int], tokens: Sequence[int]) -> list[np.ndarray]:
        """Append tokens[i] (just coded) to lanes[i], lanes in increasing order; return the
        logits that predict each of those lanes' next token, in the same order."""
        out: list[np.ndarray | None] = [None] * len(lanes)
        row_index, row_tokens, row_positions, row_lanes = [], [], [], []
        for i, (lane, token) in enumerate(zip(lanes, tokens)):
            recent = self._recent[lane]
            recent.append(token)
            if len(recent) > 2 * self.keep + 64:  # trim now and then, not every token
                del recent[: -self.keep]
            if self._filled[lane] == self.window and self.shift:
                # BOS and the lane's last keep - 1 tokens stay, moved down to positions
                # 0..keep-1; the token just coded is this step's row at position keep.
                self.model.shift_lane(lane, 1, self.window - self.keep + 1)
                self._filled[lane] = self.keep
            if self._filled[lane] < self.window:
                row_index.append(i)
                row_tokens.append(token)
                row_positions.append(self._filled[lane])
                row_lanes.append(lane)
                self._filled[lane] += 1
            else:
                kept = recent[-self.keep :]
                self.model.clear_lane(lane)
                self._filled[lane] = 1 + len(kept)
                # copied: the next call reuses the backend's logits buffer
                out[i] = np.array(self.model.evaluate([self.model.bos, *kept], 0, lane), copy=True)
        if row_tokens:
            rows = self.model.evaluate_rows(row_tokens, row_positions, row_lanes)
            for r, i in enumerate(row_index):
                out[i] = rows[r]
        return out  # type: ignore[return-value]


class LanePrefill:
    """One lane's side of LockstepLanes for a batch-invariant model (nczip's engine), when every
    token is known in advance (the encoder): the same appends, shifts and restarts, evaluated in
    blocks of up to model.n_batch rows, whose final hidden states wait in a queue until the
    coder asks for them one at a time. Since such a model's rows depend only on their own lane,
    model.head(next_hidden()) gives bit for bit the logits LockstepLanes gives the decoder.
    """

    def __init__(self, model, lane: int, window: int, keep: int, shift: bool):
        self.model = model
        self.lane = lane
        self.window = window
        self.keep = keep
        self.shift = shift
        self.filled = 0
        self.recent: list[int] = []
        self._pending: list[int] = []
        self._taken = 0  # of _pending
        self._bos = False
        self._ready: list[np.ndarray] = []
        self._next = 0  # of _ready

    def start(self) -> None:
        """The BOS row at position 0: its hidden state predicts the lane's first token."""
        self.model.clear_lane(self.lane)
        self.filled = 0
        self.recent = []
        self._bos = True

    def copy_from(self, other: "LanePrefill") -> None:
        """Take another lane's context (fan-out after the primer); both have consumed everything."""
        self.model.copy_lane(other.lane, self.lane)
        self.filled = other.filled
        self.recent = list(other.recent)

    def feed(self, tokens: Sequence[int]) -> None:
        """Tokens this lane will append, in order; each one's hidden state predicts the next."""
        self._pending = self._pending[self._taken :] + list(tokens)
        self._taken = 0

    def next_hidden(self) -> np.ndarray:
        if self._next == len(self._ready):
            self._ready = self._evaluate_block()
            self._next = 0
        row = self._ready[self._next]
        self._next += 1
        return row

    def _evaluate_block(self) -> list[np.ndarray]:
        model, lane = self.model, self.lane
        tokens: list[int] = []
        positions: list[int] = []
        if self._bos:
            self._bos = False
            tokens.append(model.bos)
            positions.append(0)
            self.filled = 1
        while self._taken < len(self._pending) and len(tokens) < model.n_batch:
            token = self._pending[self._taken]
            if self.filled == self.window:
                if tokens:
                    break  # the rows before the slide first
                self._taken += 1
                self._remember(token)
                if self.shift:  # as LockstepLanes.advance: BOS and the last keep - 1 tokens stay
                    model.shift_lane(lane, 1, self.window - self.keep + 1)
                    self.filled = self.keep
                else:  # a restart: BOS + the last keep tokens, evaluated anew; the last row predicts
                    kept = self.recent[-self.keep :]
                    model.clear_lane(lane)
                    rows = [model.bos, *kept]
                    hidden = None
                    for at in range(0, len(rows), model.n_batch):
                        chunk = rows[at : at + model.n_batch]
                        hidden = model.hidden_rows(chunk, range(at, at + len(chunk)), [lane] * len(chunk))
                    self.filled = len(rows)
                    return [np.array(hidden[-1], copy=True)]
                tokens.append(token)
                positions.append(self.filled)
                self.filled += 1
                continue
            self._taken += 1
            self._remember(token)
            tokens.append(token)
            positions.append(self.filled)
            self.filled += 1
        if not tokens:
            raise RuntimeError("internal error: a lane was asked for more predictions than it has tokens")
        hidden = model.hidden_rows(tokens, positions, [lane] * len(tokens))
        return list(np.array(hidden, copy=True))

    def _remember(self, token: int) -> None:
        self.recent.append(token)
        if len(self.recent) > 2 * self.keep + 64:  # as LockstepLanes: trim now and then
            del self.recent[: -self.keep]
