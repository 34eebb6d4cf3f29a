"""A GGUF's SentencePiece vocabulary, read by nczip itself: token pieces, byte tokens and the
tokenizer, with no llama.cpp.

Pieces follow llama.cpp's token_to_piece for SPM vocabularies (NORMAL: the text with "▁" as a
space; BYTE "<0xAB>": that byte; USER_DEFINED: the text as it is; CONTROL, UNKNOWN and UNUSED:
nothing), so a token stands for the same bytes whichever backend computes its logits.

The tokenizer is llama.cpp's SPM algorithm: the text is first cut at the vocabulary's
user-defined tokens (runs of spaces and newlines in Gemma), longest first; each remaining run
has its spaces written as "▁" and is split into UTF-8 characters, and then the adjacent pair
whose concatenation is the highest-scoring token is merged, again and again (ties: the leftmost
pair). A character that is no token becomes byte tokens. The decoder never tokenizes, so this
choice only decides how small an archive is (tokens.py checks every piece).
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np

from ..errors import NczipError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581".encode()  # "▁"


class SpmVocab:
    """tokenize / piece / byte_token (the Vocabulary protocol of models/llm.py) from GGUF metadata."""

    def __init__(self, meta: dict, name: str):
        if meta.get("tokenizer.ggml.model") != b"llama":
            model = meta.get("tokenizer.ggml.model", b"?")
            raise NczipError(f"model {name}: tokenizer {model.decode(errors='replace')!r} is not a SentencePiece one")
        self.name = name
        self.texts: list[bytes] = list(meta["tokenizer.ggml.tokens"])
        self.n_vocab = len(self.texts)
        self.scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(self.n_vocab)), dtype=np.float32)
        self.types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(self.n_vocab, NORMAL)), dtype=np.int32)
        if len(self.scores) != self.n_vocab or len(self.types) != self.n_vocab:
            raise NczipError(f"model {name}: the vocabulary's scores or types do not match its {self.n_vocab} tokens")
        self.bos = int(meta.get("tokenizer.ggml.bos_token_id", -1))
        self._ids: dict[bytes, int] | None = None
        self._pieces: list[bytes] | None = None
        self._byte_tokens: list[int] | None = None
        self._user_defined: list[bytes] | None = None

    # -- pieces -----------------------------------------------------------------------------
    def pieces(self) -> list[bytes]:
        if self._pieces is None:
            out = []
            for text, kind in zip(self.texts, self.types.tolist()):
                if kind == NORMAL:
                    out.append(text.replace(SPACE, b" "))
                elif kind == USER_DEFINED:
                    out.append(text)
                elif kind == BYTE and len(text) == 6 and text.startswith(b"<0x") and text.endswith(b">"):
                    out.append(bytes([int(text[3:5], 16)]))
                else:
                    out.append(b"")
            self._pieces = out
        return self._pieces

    def piece(self, token: int) -> bytes:
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id out of range 0..{self.n_vocab - 1}: {token}")
        return self.pieces()[token]

    def byte_token(self, value: int) -> int:
        if self._byte_tokens is None:
            found: dict[int, int] = {}
            for token in np.flatnonzero(self.types == BYTE).tolist():
                piece = self.pieces()[token]
                if len(piece) == 1:
                    found.setdefault(piece[0], token)
            missing = [v for v in range(256) if v not in found]
            if missing:
                raise NczipError(
                    f"model {self.name} has no token for byte 0x{missing[0]:02X} "
                    f"({len(missing)} byte values missing); nczip needs all 256 to code arbitrary bytes"
                )
            self._byte_tokens = [found[v] for v in range(256)]
        return self._byte_tokens[value]

    # -- tokenizer --------------------------------------------------------------------------
    def _index(self) -> dict[bytes, int]:
        if self._ids is None:
            ids: dict[bytes, int] = {}
            for i, text in enumerate(self.texts):
                ids.setdefault(text, i)
            self._ids = ids
            self._user_defined = sorted(
                (self.texts[i] for i in np.flatnonzero(self.types == USER_DEFINED).tolist() if self.texts[i]),
                key=len, reverse=True,
            )
        return self._ids

    def tokenize(self, text: bytes) -> list[int]:
        ids = self._index()
        out: list[int] = []
        for fragment, special in self._partition(text):
            if special:
                out.append(ids[fragment])
            else:
                out.extend(self._spm(fragment.replace(b" ", SPACE), ids))
        return out

    def _partition(self, text: bytes) -> list[tuple[bytes, bool]]:
        """Cut the text at user-defined tokens, longest first (llama.cpp's tokenizer_st_partition)."""
        fragments: list[tuple[bytes, bool]] = [(text, False)]
        for special in self._user_defined or ():
            if special not in text:
                continue
            cut: list[tuple[bytes, bool]] = []
            for fragment, is_special in fragments:
                if is_special or special not in fragment:
                    cut.append((fragment, is_special))
                    continue
                start = 0
                while (at := fragment.find(special, start)) >= 0:
                    if at > start:
                        cut.append((fragment[start:at], False))
                    cut.append((special, True))
                    start = at + len(special)
                if start < len(fragment):
                    cut.append((fragment[start:], False))
            fragments = cut
        return fragments

    def _spm(self, text: bytes, ids: dict[bytes, int]) -> list[int]:
        if not text:
            return []
        # UTF-8 characters (a stray continuation byte stands alone)
        starts = [i for i in range(len(text)) if text[i] & 0xC0 != 0x80 or i == 0]
        symbols = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
        n = len(symbols)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        scores = self.scores
        heap: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged length)

        def try_pair(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            merged = symbols[left] + symbols[right]
            token = ids.get(merged)
            if token is not None:
                heapq.heappush(heap, (-float(scores[token]), left, right, len(merged)))

        for i in range(1, n):
            try_pair(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            if not symbols[left] or not symbols[right] or len(symbols[left]) + len(symbols[right]) != size:
                continue  # one side was merged since
            symbols[left] += symbols[right]
            symbols[right] = b""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_pair(prev[left], left)
            try_pair(left, nxt[left])
        out: list[int] = []
        i = 0
        while i != -1:
            token = ids.get(symbols[i])
            if token is not None:
                out.append(token)
            else:
                out.extend(self.byte_token(b) for b in symbols[i])
            i = nxt[i]
        return out


def vocab_of(gguf, name: str) -> SpmVocab:
    return SpmVocab(gguf.meta, name)


__all__: Sequence[str] = ("SpmVocab", "vocab_of")
