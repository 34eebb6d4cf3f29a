"""llama.cpp backend through llama-cpp-python's low-level API.

We load with the high-level `Llama` class (it knows every loading option) but evaluate with
`llama_decode` and a batch of our own: that way we choose exactly which rows produce logits
(only the last one: 262k floats per row add up fast) and exactly how calls are shaped, which the
decoder must repeat to get the same floats.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Sequence

import numpy as np

from ..errors import NczipError
from .llm import ModelIdentity
from .registry import ModelFile

BACKEND_ID = "llama.cpp"
# Prefill chunk sizes are part of the archive's parameters: they shape llama.cpp's computation.
DEFAULT_N_BATCH = 512


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise NczipError(f"llama-cpp-python is not installed ({exc}): pip install llama-cpp-python") from None
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints loading chatter on fd 2 from C; keep the CLI's stderr clean."""
    try:
        fd = os.dup(2)
    except OSError:  # no usable stderr (daemon, closed fd): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class LlamaCppModel:
    """A GGUF model in llama.cpp, one sequence, deterministic single-row evaluation."""

    def __init__(self, model: ModelFile, *, n_ctx: int, threads: int, n_batch: int = DEFAULT_N_BATCH):
        self._lib = lib = _import_llama_cpp()
        self.identity = ModelIdentity(BACKEND_ID, model.name, model.sha256)
        try:
            with _quiet_stderr():
                self._llama = lib.Llama(
                    model_path=str(model.path),
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    # Gemma-3's sliding-window layers otherwise evict cache cells that a batched
                    # decode past 512 tokens still needs ("failed to find a memory slot").
                    swa_full=True,
                    logits_all=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise NczipError(f"cannot load model {model.path}: {exc}") from None
        self._ctx = self._llama.ctx
        self._vocab = lib.llama_model_get_vocab(self._llama.model)
        self._memory = lib.llama_get_memory(self._ctx)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.bos = int(lib.llama_vocab_bos(self._vocab))
        if self.bos < 0:
            raise NczipError(f"model {model.name} has no BOS token; nczip needs one to start each window")
        self.n_ctx = int(lib.llama_n_ctx(self._ctx))
        self.n_batch = n_batch
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._byte_tokens: list[int] | None = None

    # -- evaluation -------------------------------------------------------------------------
    def reset(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)

    def evaluate(self, tokens: Sequence[int], start: int) -> np.ndarray:
        if not tokens:
            raise ValueError("evaluate needs at least one token")
        batch = self._batch
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 0
            last = len(chunk) - 1
            is_final = offset + len(chunk) == len(tokens)
            batch.logits[last] = 1 if is_final else 0
            batch.n_tokens = len(chunk)
            status = self._lib.llama_decode(self._ctx, batch)
            if status != 0:
                raise NczipError(f"llama_decode failed with status {status} at position {start + offset}")
        pointer = self._lib.llama_get_logits_ith(self._ctx, last)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    # -- vocabulary -------------------------------------------------------------------------
    def tokenize(self, text: bytes) -> list[int]:
        capacity = len(text) + 16
        out = (self._lib.llama_token * capacity)()
        n = self._lib.llama_tokenize(self._vocab, text, len(text), out, capacity, False, False)
        if n < 0:  # cannot happen with capacity > bytes, but never trust a size blindly
            raise NczipError(f"tokenizer needs {-n} slots, had {capacity}")
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        if not 0 <= token < self.n_vocab:
            raise ValueError(f"token id out of range 0..{self.n_vocab - 1}: {token}")
        buf = self._piece_buffer
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        piece = buf.raw[:n]
        self._pieces[token] = piece
        return piece

    def byte_token(self, value: int) -> int:
        if self._byte_tokens is None:
            self._byte_tokens = self._find_byte_tokens()
        return self._byte_tokens[value]

    def _find_byte_tokens(self) -> list[int]:
        """SentencePiece vocabularies spell byte tokens "<0xAB>"; others (byte-level BPE) have a
        token whose piece is the single byte. Scanned once per model load."""
        lib = self._lib
        found: dict[int, int] = {}
        for token in range(self.n_vocab):
            text = lib.llama_vocab_get_text(self._vocab, token)
            if text and len(text) == 6 and text.startswith(b"<0x") and text.endswith(b">"):
                try:
                    value = int(text[3:5], 16)
                except ValueError:
                    continue
                if self.piece(token) == bytes([value]):
                    found.setdefault(value, token)
                    if len(found) == 256:
                        break
        if len(found) < 256:
            for token in range(self.n_vocab):
                piece = self.piece(token)
                if len(piece) == 1:
                    found.setdefault(piece[0], token)
                    if len(found) == 256:
                        break
        missing = [v for v in range(256) if v not in found]
        if missing:
            raise NczipError(
                f"model {self.identity.name} has no token for byte 0x{missing[0]:02X} "
                f"({len(missing)} byte values missing); nczip needs all 256 to code arbitrary bytes"
            )
        return [found[v] for v in range(256)]

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        llama, self._llama = getattr(self, "_llama", None), None
        if llama is not None:
            llama.close()

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
