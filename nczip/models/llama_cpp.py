"""llama.cpp backend through llama-cpp-python's low-level API.

Loading, context and evaluation all go through the C API (llama_model_load_from_file,
llama_init_from_model, llama_decode with a batch of our own): that way we choose the context's
layout (one KV stream per lane), exactly which rows produce logits (262k floats per row add up
fast) and exactly how calls are shaped, which the decoder must repeat to get the same floats.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import NczipError
from .llm import ModelIdentity, VocabularyOf
from ..params import MAX_LANES, N_BATCH
from .backends import LLAMA_HEAD_ID, LLAMA_ID, LLAMA_IDS, LLAMA_LEGACY_ID
from .registry import ModelFile

# The backend and its arithmetic. An archive records the id it was coded with, and decoding
# computes exactly as that id says; the floats of one id differ from another's, so every id
# that was ever written stays here.
# - "-fa": flash attention, whose floats differ from the plain attention path.
# - "-fa2": a lone lane in a batch of non-consecutive lanes gets a padding row (_decode);
#   "llama.cpp-fa" padded single-token calls only.
# - "-h8": llama.cpp stops at the final hidden states and nczip's own integer head
#   (models/head.py) computes the logits; its copy of the output matrix is then never paged in
#   beside ours. Only where the output matrix is Q8_0 (Gemma-3-270M's is) in an architecture
#   with a plain head (models/head.py).
# - "-sw": sliding-window layers keep only their window's cells (llama.cpp's swa_full off),
#   a ring, instead of a full context's. Gemma-3-270M has 15 sliding layers of 18: per lane,
#   3 x 4,352 + 15 x 1,024 cells of 1 KB instead of 18 x 4,352 (29 MB, not 78 MB). Cells wrap in the ring, so attention
#   sums them in another order than a full cache: other floats, so another id.
HEAD_BACKEND_ID = LLAMA_HEAD_ID
BACKEND_ID = LLAMA_ID
LEGACY_BACKEND_ID = LLAMA_LEGACY_ID


@dataclass(frozen=True)
class Arithmetic:
    """What a backend id fixes about the computation."""

    pad_scattered_lanes: bool
    own_head: bool
    swa_full: bool


ARITHMETIC = {
    HEAD_BACKEND_ID: Arithmetic(pad_scattered_lanes=True, own_head=True, swa_full=False),
    BACKEND_ID: Arithmetic(pad_scattered_lanes=True, own_head=False, swa_full=False),
    "llama.cpp-fa2-h8": Arithmetic(pad_scattered_lanes=True, own_head=True, swa_full=True),
    "llama.cpp-fa2": Arithmetic(pad_scattered_lanes=True, own_head=False, swa_full=True),
    LEGACY_BACKEND_ID: Arithmetic(pad_scattered_lanes=False, own_head=False, swa_full=True),
}
BACKEND_IDS = LLAMA_IDS
assert set(ARITHMETIC) == set(LLAMA_IDS)
# Prefill chunk sizes are part of the archive's parameters (params.N_BATCH): they shape llama.cpp's
# computation. MAX_LANES is llama.cpp's LLAMA_MAX_SEQ, the sequences one context can hold.
DEFAULT_N_BATCH = N_BATCH


# libgomp's spin before an idle thread sleeps, read once when llama.cpp's CPU library loads it.
# Its default (300,000 spins, a few ms) keeps llama.cpp's worker spinning on one of the two cores
# after every llama_decode, while nczip's own head runs: the first head call after a decode took
# 20-25 ms instead of 14. 10,000 still spins through ggml's barriers inside a graph (OpenMP
# barriers), where sleeping costs more (OMP_WAIT_POLICY=PASSIVE: body 63 ms per 16-row step
# instead of 53). enwik8's first 60 KB compressed in 96-99 s instead of 112, same archive.
GOMP_SPINCOUNT = "10000"


def _import_llama_cpp():
    os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)  # a user's own setting wins
    try:
        import llama_cpp
        import llama_cpp._logger  # installs its Python log callback on import: import it before replacing it
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise NczipError(
            f"llama-cpp-python is not installed ({exc}): the llama backend needs it (pip install 'nczip[llama]'); "
            "Gemma-3 models run on nczip's own engine without it"
        ) from None
    _discard_llama_log(llama_cpp)
    return llama_cpp


_log_sink = None


def _discard_llama_log(lib) -> None:
    """Point llama.cpp's log at a C function that drops it. llama-cpp-python's callback is Python,
    and llama.cpp calls it from inside llama_decode (every K-shift logs): a SIGTERM handled in that
    frame raised Terminated into ctypes, which printed and swallowed it, and nczip ran on (CI saw
    it). With a C sink no Python runs inside llama.cpp. Loading chatter is dropped as before; errors
    are nczip's own one-line messages."""
    global _log_sink
    from .. import _cext

    if _log_sink is None:
        _log_sink = lib.llama_log_callback(_cext.discard_log_address())
    lib.llama_log_set(_log_sink, ctypes.c_void_p(0))


def _cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_int8" in f.read().split()
    except OSError:
        return False


def model_params(lib):
    """llama.cpp's model parameters, without its AMX buffer type on CPUs that have AMX: there
    ggml's AMX matrix product crashed inside llama_decode (segmentation fault in
    ggml_backend_amx_mul_mat, llama-cpp-python 0.3.36 on a Xeon with amx_int8), so no archive
    was ever coded with it and leaving it out changes nothing that decodes today."""
    params = lib.llama_model_default_params()
    if _cpu_has_amx() and hasattr(params, "use_extra_bufts"):
        params.use_extra_bufts = False
    return params


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


def _release_file_pages(path, offset: int, length: int) -> None:
    """Hand back the resident pages of bytes [offset, offset + length) of `path` wherever this
    process maps it (llama.cpp maps the GGUF and pages all of it in at load). With our head,
    llama.cpp reads the output matrix only for the input rows it embeds, so ~170 MB of it need
    not stay resident beside our packed copy (measured: peak RSS 1,888 MB on alice29 before).
    MADV_DONTNEED on a read-only file mapping only drops page-table entries: a later read
    faults the bytes back in from the file. Linux only; elsewhere nothing happens."""
    import mmap as _mmap
    import sys

    if not sys.platform.startswith("linux") or length <= 0:
        return
    try:
        target = os.stat(path)
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return
    page = _mmap.PAGESIZE
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        try:
            mapped = os.stat(fields[5])
        except OSError:
            continue
        if (mapped.st_ino, mapped.st_dev) != (target.st_ino, target.st_dev):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        file_offset = int(fields[2], 16)
        lo = max(offset, file_offset)
        hi = min(offset + length, file_offset + (end - start))
        lo = -(-lo // page) * page  # whole pages inside the matrix only
        hi = hi // page * page
        if hi > lo:
            libc.madvise(ctypes.c_void_p(start + lo - file_offset), ctypes.c_size_t(hi - lo), _mmap.MADV_DONTNEED)


class _Capture(ctypes.Structure):
    """cext/nczip.h's ncz_capture: what the C graph callback needs to copy result_norm."""

    _fields_ = [
        ("get_name", ctypes.c_void_p),
        ("get_data", ctypes.c_void_p),
        ("nbytes", ctypes.c_void_p),
        ("buf", ctypes.c_void_p),
        ("cap", ctypes.c_size_t),
        ("len", ctypes.c_size_t),
        ("overflow", ctypes.c_int32),
        ("enabled", ctypes.c_int32),
    ]


class LlamaCppModel(VocabularyOf):
    """A GGUF model in llama.cpp: deterministic evaluation of one or more lanes (sequences).

    Each lane is a sequence of its own in llama.cpp, with its own `n_ctx` positions. The KV cache
    is split per sequence (kv_unified off): in a unified cache every row attends over all lanes'
    cells, masked, which made lockstep decoding 30% slower at 1,000 tokens per lane (measured).
    """

    def __init__(
        self, model: ModelFile, *, n_ctx: int, threads: int, n_batch: int = DEFAULT_N_BATCH, n_lanes: int = 1
    ):
        self._lib = lib = _import_llama_cpp()
        self.identity = ModelIdentity(BACKEND_ID, model.name, model.sha256)
        self._pad_lone_lanes = True
        self._own_head = False
        self._swa_full = ARITHMETIC[BACKEND_ID].swa_full
        self._model = self._ctx = self._batch = None
        self._threads = threads
        self.n_batch = n_batch
        with _quiet_stderr():
            lib.llama_backend_init()
            self._model = lib.llama_model_load_from_file(str(model.path).encode(), model_params(lib))
        if not self._model:
            raise NczipError(f"cannot load model {model.path}: llama.cpp could not read it as a GGUF model")
        self.vocab = LlamaVocab(lib, self._model, model.name)
        self.n_vocab = self.vocab.n_vocab
        self.bos = self.vocab.bos
        if self.bos < 0:
            self.close()
            raise NczipError(f"model {model.name} has no BOS token; nczip needs one to start each window")
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._shape: tuple[int, int] | None = None
        self._head = self._capture = None
        self._setup_head(model)
        self.configure(n_ctx, n_lanes)
        self.default_backend_id = HEAD_BACKEND_ID if self._head is not None else BACKEND_ID

    @property
    def threads(self) -> int:
        """CPU threads this model computes with (the ensemble borrows them between calls)."""
        return self._threads

    # -- nczip's own head --------------------------------------------------------------------
    def _setup_head(self, model: ModelFile) -> None:
        """Our head for a Q8_0 output matrix, and the C callback that hands it the hidden states."""
        from .. import _cext
        from .head import Q8Head

        try:  # ggml's tensor accessors, for the C callback; a llama-cpp-python without them keeps its head
            from llama_cpp import _ggml

            accessors = [ctypes.cast(getattr(_ggml.libggml, name), ctypes.c_void_p).value
                         for name in ("ggml_get_name", "ggml_get_data", "ggml_nbytes")]
            callback_type = self._lib.ggml_backend_sched_eval_callback
        except (ImportError, AttributeError, OSError):
            return
        head = Q8Head.from_gguf(model.path, self._threads)
        if head is None or head.n_embd != int(self._lib.llama_model_n_embd(self._model)):
            return
        self._head = head
        _release_file_pages(model.path, head.source_offset, head.source_bytes)
        self._hidden = np.zeros((self.n_batch, head.n_embd), dtype=np.float32)
        capture = _Capture()
        capture.get_name, capture.get_data, capture.nbytes = accessors
        capture.buf = self._hidden.ctypes.data
        capture.cap = self._hidden.nbytes
        self._capture = capture
        self._callback = callback_type(_cext.capture_callback_address())

    def configure(self, n_ctx: int, n_lanes: int) -> None:
        """Give the model a context of n_lanes lanes with n_ctx positions each (empty).

        A no-op when the shape is the current one. The context is sized to the lanes in use,
        not to the most lanes possible: llama.cpp clears the whole KV buffer when it creates it,
        so an oversized context costs memory and time even if it stays unused."""
        if not 1 <= n_lanes <= min(self.n_batch, MAX_LANES):
            raise ValueError(f"n_lanes must be in 1..{min(self.n_batch, MAX_LANES)}, got {n_lanes}")
        if self._shape == (n_ctx, n_lanes):
            self.reset()
            return
        lib = self._lib
        if self._ctx:
            lib.llama_free(self._ctx)
            self._ctx = None
            self._shape = None
        params = lib.llama_context_default_params()
        # One spare cell per lane for the padding row of single-token calls (_decode).
        params.n_ctx = (n_ctx + 1) * n_lanes
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = n_lanes
        params.n_threads = params.n_threads_batch = self._threads
        # Sliding-window layers keep a ring of their window + one batch of cells per lane, or
        # (archives of ids before "-sw") a full context's. A prefill chunk of n_batch tokens
        # then finds its cells among those that left every lane's window.
        params.swa_full = self._swa_full
        params.kv_unified = False
        # Flash attention: 140 tok/s instead of 98 for 16 lanes at 2,000 tokens of context
        # (measured 2026-11-28 with a probe script outside the repository). Its CPU kernel gives every (query row, head) to one
        # thread, except a lone query over >= 512 cells, which it splits by thread count; _decode
        # never sends a lone query, so the floats do not depend on the thread count.
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        if self._capture is not None:
            # A callback that asks for no tensor leaves the graph as it is (the "-fa2" path).
            params.cb_eval = self._callback
            params.cb_eval_user_data = ctypes.cast(ctypes.pointer(self._capture), ctypes.c_void_p)
        with _quiet_stderr():
            self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise NczipError(
                f"cannot create a llama.cpp context of {n_lanes} x {n_ctx} tokens for {self.identity.name} "
                "(out of memory?)"
            )
        self._memory = lib.llama_get_memory(self._ctx)
        self.n_lanes = n_lanes
        self.n_ctx = int(lib.llama_n_ctx_seq(self._ctx)) - 1  # positions per lane (one cell spare)
        self._shape = (n_ctx, n_lanes)

    # -- evaluation -------------------------------------------------------------------------
    def reset(self) -> None:
        # Metadata only: freed cells are masked out of attention, so their old (finite) contents
        # contribute exact zeros (tests compare reused contexts with fresh ones, bit for bit).
        self._lib.llama_memory_clear(self._memory, False)

    def clear_lane(self, lane: int) -> None:
        if not self._lib.llama_memory_seq_rm(self._memory, lane, -1, -1):
            raise NczipError(f"llama.cpp could not clear lane {lane}")

    def copy_lane(self, source: int, target: int) -> None:
        # Across KV streams llama.cpp copies the whole stream, applied at the next decode.
        self.clear_lane(target)
        self._lib.llama_memory_seq_cp(self._memory, source, target, -1, -1)

    def _can_shift(self) -> bool:
        """llama_memory_can_shift also says no whenever the sliding-window ring is smaller than
        the full layers' cache, because shifting an arbitrary range could bring back cells the
        ring has dropped. nczip only ever moves everything after the removed range down by the
        same amount, so every cell a later query can see in its window is still there; what
        remains is that the keys' rotary encoding be one llama.cpp knows how to shift (not
        M-RoPE, whose positions are not one number)."""
        lib = self._lib
        if lib.llama_memory_can_shift(self._memory):
            return True
        return not self._swa_full and lib.llama_model_rope_type(self._model) in (
            lib.LLAMA_ROPE_TYPE_NORM, lib.LLAMA_ROPE_TYPE_NEOX
        )

    def shift_lane(self, lane: int, start: int, end: int) -> None:
        # llama.cpp re-rotates the moved keys (RoPE) in a graph of its own at the next decode.
        if not self._can_shift():
            raise NczipError(
                f"llama.cpp cannot shift the cache of model {self.identity.name}: compress with --slide restart"
            )
        if not self._lib.llama_memory_seq_rm(self._memory, lane, start, end):
            raise NczipError(f"llama.cpp could not remove positions {start}..{end - 1} of lane {lane}")
        self._lib.llama_memory_seq_add(self._memory, lane, end, -1, start - end)

    def use_backend_id(self, backend_id: str) -> None:
        """Compute as archives with this id were coded (see ARITHMETIC). A change of the cache
        layout builds a new, empty context of the current shape."""
        arithmetic = ARITHMETIC.get(backend_id)
        if arithmetic is None:
            raise ValueError(f"not a llama.cpp backend id: {backend_id!r}")
        if arithmetic.own_head and self._head is None:
            raise NczipError(
                f"the archive was coded with nczip's own Q8_0 output head ({backend_id}), which model "
                f"{self.identity.name} does not allow (its output matrix is not Q8_0, or its architecture is not one "
                "whose logits nczip computes itself)"
            )
        self._pad_lone_lanes = arithmetic.pad_scattered_lanes
        self._own_head = arithmetic.own_head
        if self._capture is not None:
            self._capture.enabled = int(self._own_head)
        if arithmetic.swa_full != self._swa_full:
            self._swa_full = arithmetic.swa_full
            shape, self._shape = self._shape, None
            if shape is not None:
                self.configure(*shape)
        self.identity = ModelIdentity(backend_id, self.identity.name, self.identity.sha256)

    def _decode(self, where: str) -> None:
        """Run the batch, with padding rows where a lane would otherwise be a lone query.

        ggml's flash attention splits a lone query's cells between threads (its split-KV path:
        one query in one KV stream, >= 512 cells), which makes the floats depend on the thread
        count. Two cases reach it: a single-token batch, and (found on enwik8's first MB, 1 and
        2 threads) a batch of rows whose lanes are not consecutive: llama.cpp splits such a batch
        into runs of consecutive sequences, and a run of one lane is a lone query. So a
        single-token batch, and every row of a non-consecutive batch, gets a padding row: the
        same token in the same lane one position later, without logits, removed after the call.
        No real row can see a padding row (it is later in its lane's causal mask)."""
        batch = self._batch
        n = batch.n_tokens
        lanes = [batch.seq_id[i][0] for i in range(n)]
        if n == 1:
            padded = [0]
        elif self._pad_lone_lanes and len(set(lanes)) == n and sorted(lanes) != list(range(min(lanes), min(lanes) + n)):
            padded = list(range(n))
        else:
            padded = []
        for j, i in enumerate(padded):
            k = n + j
            batch.token[k] = batch.token[i]
            batch.pos[k] = batch.pos[i] + 1
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = batch.seq_id[i][0]
            batch.logits[k] = 0
        batch.n_tokens = n + len(padded)
        if self._own_head:
            self._capture.len = self._capture.overflow = 0
        status = self._lib.llama_decode(self._ctx, batch)
        batch.n_tokens = n
        if status == 0:
            for i in padded:
                if not self._lib.llama_memory_seq_rm(self._memory, batch.seq_id[i][0], batch.pos[i] + 1, -1):
                    raise NczipError(f"llama.cpp could not remove a padding row ({where})")
        if status != 0:
            raise NczipError(f"llama_decode failed with status {status} ({where})")
        if self._own_head:
            # Hidden states arrive per llama.cpp micro-batch; a batch of scattered lanes is split
            # into runs of consecutive lanes, in increasing order, so rows must be in that order.
            outputs = sum(1 for i in range(n) if batch.logits[i])
            captured = self._capture.len // (4 * self._head.n_embd)
            if self._capture.overflow or captured != outputs or lanes != sorted(lanes):
                raise NczipError(
                    f"llama.cpp handed over {captured} hidden states for {outputs} rows ({where}): "
                    "this llama.cpp build does not work with nczip's own head"
                )

    def evaluate(self, tokens: Sequence[int], start: int, lane: int = 0) -> np.ndarray:
        if not tokens:
            raise ValueError("evaluate needs at least one token")
        batch = self._batch
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = lane
                batch.logits[i] = 0
            last = len(chunk) - 1
            is_final = offset + len(chunk) == len(tokens)
            batch.logits[last] = 1 if is_final else 0
            batch.n_tokens = len(chunk)
            self._decode(f"lane {lane}, position {start + offset}")
        if self._own_head:
            return self._head(self._hidden[:1])[0]
        pointer = self._lib.llama_get_logits_ith(self._ctx, last)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def evaluate_rows(self, tokens: Sequence[int], positions: Sequence[int], lanes: Sequence[int]) -> np.ndarray:
        rows = len(tokens)
        if not 1 <= rows <= self.n_batch or len(positions) != rows or len(lanes) != rows:
            raise ValueError(f"evaluate_rows needs 1..{self.n_batch} rows of token, position and lane")
        batch = self._batch
        for i in range(rows):
            batch.token[i] = tokens[i]
            batch.pos[i] = positions[i]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = lanes[i]
            batch.logits[i] = 1
        batch.n_tokens = rows
        self._decode(f"{rows} rows, lanes {lanes[0]}..{lanes[-1]}")
        if self._own_head:
            return self._head(self._hidden[:rows])
        pointer = self._lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab))

    def close(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_head", None) is not None:
            self._head.close()
            self._head = None
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
        self._ctx = None
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
        self._model = None

    def __del__(self):  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


class LlamaVocab:
    """A GGUF's vocabulary as llama.cpp reads it: tokenizer, token pieces and byte tokens.

    Both backends use it for GGUF files (the torch backend loads the file vocabulary-only), so one
    GGUF gives the same token ids whichever backend computes the logits."""

    def __init__(self, lib, model, name: str):
        self._lib = lib
        self._vocab = lib.llama_model_get_vocab(model)
        self.name = name
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self.bos = int(lib.llama_vocab_bos(self._vocab))
        self._piece_buffer = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._byte_tokens: list[int] | None = None

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
                f"model {self.name} has no token for byte 0x{missing[0]:02X} "
                f"({len(missing)} byte values missing); nczip needs all 256 to code arbitrary bytes"
            )
        return [found[v] for v in range(256)]


def load_vocab_only(model: ModelFile):
    """(vocabulary, release): a GGUF's vocabulary without its weights, in a second or two."""
    lib = _import_llama_cpp()
    params = lib.llama_model_default_params()
    params.vocab_only = True
    with _quiet_stderr():
        lib.llama_backend_init()
        handle = lib.llama_model_load_from_file(str(model.path).encode(), params)
    if not handle:
        raise NczipError(f"cannot load model {model.path}: llama.cpp could not read it as a GGUF model")
    return LlamaVocab(lib, handle, model.name), lambda: lib.llama_model_free(handle)
