"""nczip's own engine as a LanguageModel: exact, portable, batch-invariant (cext/engine.h).

Its logits are defined by nczip's code, not by the CPU, the thread count or the shape of a
call, so an archive it codes decodes on any machine; and since a row's logits depend only on its
lane's tokens, the encoder may evaluate known tokens in large blocks (hidden_rows) while the
decoder steps in lockstep, with the same bits. It reads Gemma-3 GGUFs (the default model's
tensor types: Q8_0, Q5_0, Q4_K, Q6_K; F32 and F16 matrices are quantized to Q8_0 at load) and
tokenizes with the GGUF's own vocabulary (models/vocab.py): no llama.cpp anywhere.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .. import _cext
from ..errors import NczipError
from .backends import ENGINE_ID, ENGINE_IDS
from .gguf import GGUFFile
from .llm import ModelIdentity, VocabularyOf
from .registry import ModelFile
from .vocab import SpmVocab

# The backend id archives record names the engine's arithmetic (docs/engine.md; backends.py).
BACKEND_ID = ENGINE_ID
BACKEND_IDS = ENGINE_IDS
ARCHITECTURES = frozenset({"gemma3"})

# Rows of one lane in one call: a prefill block of the encoder, or a restart's BOS + kept tokens
# in chunks. The sliding-window layers keep a ring of window + this many cells per lane.
N_BATCH = 128

KERNELS = {"portable": 0, "avx2": 1, "avx512": 2}
# Tests and benchmarks force a kernel (e.g. NCZIP_KERNEL=portable); the bits are the same.
KERNEL_ENV = "NCZIP_KERNEL"

# Tensor slots of cext/engine.h (NCZ_T_*), by GGUF name (per layer: "blk.N." + name).
_GLOBAL_TENSORS = {"token_embd.weight": 0, "output.weight": 1, "output_norm.weight": 2}
_LAYER_TENSORS = {
    "attn_norm.weight": 3, "attn_q.weight": 4, "attn_k.weight": 5, "attn_v.weight": 6,
    "attn_q_norm.weight": 7, "attn_k_norm.weight": 8, "attn_output.weight": 9,
    "post_attention_norm.weight": 10, "ffn_norm.weight": 11, "ffn_gate.weight": 12, "ffn_up.weight": 13,
    "ffn_down.weight": 14, "post_ffw_norm.weight": 15,
}
# bytes per block and values per block of the GGUF types the engine reads
_TYPE_BLOCKS = {0: (4, 1), 1: (2, 1), 6: (22, 32), 8: (34, 32), 12: (144, 256), 14: (210, 256)}


def supports(path) -> bool:
    """Whether the engine runs this GGUF (an architecture it knows); False for anything else."""
    try:
        with GGUFFile(path) as g:
            return _architecture(g) in ARCHITECTURES
    except (OSError, ValueError):
        return False


def _architecture(g: GGUFFile) -> str:
    arch = g.meta.get("general.architecture", b"")
    return arch.decode("utf-8", "replace") if isinstance(arch, bytes) else str(arch)


def kernel_from_env() -> int | None:
    name = os.environ.get(KERNEL_ENV)
    if not name:
        return None
    if name not in KERNELS:
        raise NczipError(f"{KERNEL_ENV} must be one of {', '.join(KERNELS)}, got {name!r}")
    return KERNELS[name]


class EngineModel(VocabularyOf):
    """A Gemma-3 GGUF in nczip's engine, with lanes of its own (LanguageModel, models/llm.py)."""

    # A row's logits depend only on its lane's tokens: the encoder may prefill (codec.py).
    batch_invariant = True
    # ... and on nothing about the machine: no drift checkpoints needed (pipeline.coding_params).
    portable = True

    def __init__(self, model: ModelFile, *, n_ctx: int, threads: int, n_lanes: int = 1):
        self.n_batch = N_BATCH
        self._threads = threads
        try:
            g = GGUFFile(model.path)
        except (OSError, ValueError) as exc:
            raise NczipError(f"cannot load model {model.path}: {exc}") from None
        try:
            arch = _architecture(g)
            if arch not in ARCHITECTURES:
                raise NczipError(
                    f"model {model.name} is a {arch!r} model; nczip's engine runs {', '.join(sorted(ARCHITECTURES))} "
                    "(use --backend llama for other architectures)"
                )
            self.vocab = SpmVocab(g.meta, model.name)
            self._engine = self._load(g, arch, model.name)
        finally:
            g.close()
        self.identity = ModelIdentity(BACKEND_ID, model.name, model.sha256)
        self.default_backend_id = BACKEND_ID
        self.n_vocab = self.vocab.n_vocab
        self.bos = self.vocab.bos
        if not 0 <= self.bos < self.n_vocab:
            raise NczipError(f"model {model.name} has no BOS token; nczip needs one to start each window")
        self._engine.set_threads(threads)
        kernel = kernel_from_env()
        if kernel is not None:
            self._engine.kernel = kernel
        self._hidden = np.empty((0, self.n_embd), dtype=np.float32)
        self._logits = np.empty((0, self.n_vocab), dtype=np.float32)
        self._shape: tuple[int, int] | None = None
        self.configure(n_ctx, n_lanes)

    def _load(self, g: GGUFFile, arch: str, name: str):
        meta = g.meta

        def key(suffix, default=None):
            value = meta.get(f"{arch}.{suffix}", default)
            if value is None:
                raise NczipError(f"model {name}: its GGUF lacks {arch}.{suffix}")
            return value

        n_layer = int(key("block_count"))
        n_head = int(key("attention.head_count"))
        n_embd = int(key("embedding_length"))
        head_dim = int(key("attention.key_length", n_embd // max(n_head, 1)))
        if int(key("attention.value_length", head_dim)) != head_dim:
            raise NczipError(f"model {name}: keys and values of different lengths are not supported")
        if f"{arch}.rope.scaling.type" in meta or f"{arch}.rope.scaling.factor" in meta:
            raise NczipError(f"model {name}: RoPE scaling is not supported by nczip's engine (use --backend llama)")
        pattern = key("attention.sliding_window_pattern", 6)
        if isinstance(pattern, np.ndarray):  # one flag per layer
            local = bytes(int(bool(x)) for x in pattern.tolist())
        else:
            pattern = int(pattern)
            local = bytes(int(pattern > 0 and i % pattern < pattern - 1) for i in range(n_layer))
        self.n_embd = n_embd
        engine = _cext.Engine(
            n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=int(key("attention.head_count_kv", n_head)),
            head_dim=head_dim, n_ff=int(key("feed_forward_length")), n_vocab=self.vocab.n_vocab,
            swa_window=int(key("attention.sliding_window", 1 << 30)),
            eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_base=float(key("rope.freq_base", 10000.0)), rope_base_local=float(key("rope.freq_base_swa", 10000.0)),
            layer_local=local,
        )
        for tensor_name, info in g.tensors.items():
            if tensor_name in _GLOBAL_TENSORS:
                which, layer = _GLOBAL_TENSORS[tensor_name], 0
            else:
                parts = tensor_name.split(".", 2)
                if len(parts) != 3 or parts[0] != "blk" or parts[2] not in _LAYER_TENSORS or not parts[1].isdigit():
                    continue  # not one the forward pass reads
                which, layer = _LAYER_TENSORS[parts[2]], int(parts[1])
            if info.ggml_type not in _TYPE_BLOCKS:
                raise NczipError(
                    f"model {name}: tensor {tensor_name} has GGUF type {info.ggml_type}, which nczip's engine does "
                    "not read (it reads F32, F16, Q8_0, Q5_0, Q4_K and Q6_K; use --backend llama)"
                )
            block_bytes, block_values = _TYPE_BLOCKS[info.ggml_type]
            if info.n_in % block_values:
                raise NczipError(f"model {name}: tensor {tensor_name} has rows of {info.n_in} values")
            nbytes = info.n_out * info.n_in // block_values * block_bytes
            data = g.data(info, nbytes)
            try:
                engine.set_tensor(which, layer, info.ggml_type, data, info.n_out, info.n_in)
            except ValueError as exc:
                raise NczipError(f"model {name}: {exc}") from None
            finally:
                data.release()
        if not engine.ready():
            raise NczipError(f"model {name}: its GGUF lacks tensors a {arch} forward pass needs")
        return engine

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def kernel(self) -> int:
        """0 portable, 1 AVX2, 2 AVX-512 VNNI: the SIMD code in use (never changes a bit)."""
        return self._engine.kernel

    @kernel.setter
    def kernel(self, value: int) -> None:
        self._engine.kernel = value

    def use_backend_id(self, backend_id: str) -> None:
        if backend_id not in BACKEND_IDS:
            raise ValueError(f"not an engine backend id: {backend_id!r}")

    # -- lanes ------------------------------------------------------------------------------
    def configure(self, n_ctx: int, n_lanes: int) -> None:
        if not 1 <= n_lanes <= 4096:
            raise ValueError(f"n_lanes must be in 1..4096, got {n_lanes}")
        if self._shape == (n_ctx, n_lanes):
            self.reset()
            return
        self._shape = None
        try:
            self._engine.configure(n_ctx, n_lanes, self.n_batch)
        except MemoryError:
            raise NczipError(f"out of memory for {n_lanes} lanes of {n_ctx} tokens") from None
        self.n_ctx = n_ctx
        self.n_lanes = n_lanes
        self._shape = (n_ctx, n_lanes)

    def reset(self) -> None:
        self._engine.reset()

    def clear_lane(self, lane: int) -> None:
        self._engine.clear_lane(lane)

    def copy_lane(self, source: int, target: int) -> None:
        self._engine.copy_lane(source, target)

    def shift_lane(self, lane: int, start: int, end: int) -> None:
        if start != 1:
            raise ValueError("nczip's engine keeps a lane's BOS: a shift drops positions from 1 on")
        self._engine.shift_lane(lane, end)

    # -- evaluation -------------------------------------------------------------------------
    def hidden_rows(self, tokens: Sequence[int], positions: Sequence[int], lanes: Sequence[int]) -> np.ndarray:
        """Final hidden states (rows, n_embd) of rows appended to their lanes: what the head turns
        into logits. A view into a buffer the next call reuses."""
        rows = len(tokens)
        if self._hidden.shape[0] < rows:
            self._hidden = np.empty((rows, self.n_embd), dtype=np.float32)
        hidden = self._hidden[:rows]
        self._engine.forward(
            np.asarray(tokens, dtype=np.int32), np.asarray(positions, dtype=np.int32),
            np.asarray(lanes, dtype=np.int32), hidden,
        )
        return hidden

    def head(self, hidden: np.ndarray) -> np.ndarray:
        """Logits (rows, n_vocab) of final hidden states; a view the next call reuses."""
        hidden = np.ascontiguousarray(hidden, dtype=np.float32)
        rows = hidden.shape[0]
        if self._logits.shape[0] < rows:
            self._logits = np.empty((rows, self.n_vocab), dtype=np.float32)
        logits = self._logits[:rows]
        self._engine.head(hidden, logits)
        return logits

    def evaluate_rows(self, tokens: Sequence[int], positions: Sequence[int], lanes: Sequence[int]) -> np.ndarray:
        return self.head(self.hidden_rows(tokens, positions, lanes))

    def evaluate(self, tokens: Sequence[int], start: int, lane: int = 0) -> np.ndarray:
        if not tokens:
            raise ValueError("evaluate needs at least one token")
        hidden = None
        for offset in range(0, len(tokens), self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            hidden = self.hidden_rows(chunk, range(start + offset, start + offset + len(chunk)), [lane] * len(chunk))
        return self.head(hidden[-1:])[0]

    def close(self) -> None:
        self._engine = None
