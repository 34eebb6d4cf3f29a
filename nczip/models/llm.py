"""The predictor protocol the codec drives, and the context window both coder sides share.

Decoding is only correct if the decoder computes bit-identical logits, and backends give different
floats for different batch shapes. So the codec never talks to a model directly: it goes through
SlidingWindow, which turns "the next token is t" into exactly the same sequence of evaluate() calls
on the encoder and the decoder, slides included.
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
    """A deterministic next-token predictor.

    The same sequence of calls must give bit-identical logits, whatever the thread count.
    """

    identity: ModelIdentity
    n_vocab: int
    bos: int
    n_ctx: int  # positions the backend's context can hold
    n_batch: int  # tokens per evaluation call when prefilling

    def reset(self) -> None:
        """Forget the whole context."""

    def evaluate(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Append tokens at positions start.. and return float32 logits after the last one.

        The returned array may be a view into backend memory, valid until the next call.
        """

    def tokenize(self, text: bytes) -> list[int]:
        """The model's own tokenization of valid UTF-8 text (no BOS, no special-token parsing)."""

    def piece(self, token: int) -> bytes:
        """The exact bytes a token stands for."""

    def byte_token(self, value: int) -> int:
        """The token that stands for the single byte `value` (byte fallback)."""

    def close(self) -> None:
        """Release the backend's memory."""


class SlidingWindow:
    """Feeds tokens to a model one at a time, keeping BOS at the start of every window.

    When the window is full, the context restarts as BOS + the last `keep` tokens, prefilled in
    n_batch chunks. Gemma loses about 3% without its BOS at the window start, so it is kept.
    """

    def __init__(self, model: LanguageModel, window: int, keep: int):
        if not 2 <= window <= model.n_ctx:
            raise ValueError(f"window must be in 2..{model.n_ctx}, got {window}")
        if not 1 <= keep <= window - 2:
            raise ValueError(f"keep must be in 1..{window - 2}, got {keep}")
        self.model = model
        self.window = window
        self.keep = keep
        self._recent: list[int] = []
        self._filled = 0

    def start(self) -> np.ndarray:
        """Begin a new stream: the logits that predict its first token."""
        self.model.reset()
        self._recent = []
        self._filled = 1
        return self.model.evaluate([self.model.bos], 0)

    def advance(self, token: int) -> np.ndarray:
        """Append the token just coded and return the logits that predict the next one."""
        self._recent.append(token)
        if len(self._recent) > 2 * self.keep + 64:  # trim now and then, not every token
            del self._recent[: -self.keep]
        if self._filled < self.window:
            logits = self.model.evaluate([token], self._filled)
            self._filled += 1
            return logits
        kept = self._recent[-self.keep :]
        self.model.reset()
        self._filled = 1 + len(kept)
        return self.model.evaluate([self.model.bos, *kept], 0)
