"""nczip's own output head: the logits of a GGUF whose output matrix is Q8_0, from the final
hidden states that llama.cpp hands over (LlamaCppModel stops its graph there).

Why: on two cores llama.cpp's head (262,144 x 640 for Gemma-3-270M) took ~60% of the model's
time. The C kernel (cext/head.c) computes the same product with exact integer block dot
products (AVX-512 VNNI where the CPU has it, a plain loop otherwise, same bits) and a fixed
order of float32 operations per logit, so its floats do not depend on threads or SIMD width.

The weights are read once from the GGUF (in chunks rather than through a memory map, so they do
not stay resident twice) and packed into the kernel's layout: groups of 16 vocabulary rows,
int8 quants, per-block sums and scales.
"""
from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import _cext

Q8_0_BLOCK = 32
Q8_0_BYTES = 34  # float16 scale + 32 int8 quants
GROUP = 16
# Vocabulary rows read and packed per chunk: bounds the memory the packing itself takes.
_CHUNK_ROWS = 16384


# GGUF metadata value types (gguf.GGUFValueType) and their fixed sizes; 8 is a string, 9 an array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGML_TYPE_Q8_0 = 8


# Architectures whose llama.cpp graph ends in logits = output matrix x result_norm, nothing after
# (no logit scale, no soft-capping): only those get our head. Gemma-3 is checked against
# llama.cpp's own logits by tests/test_head.py (tiny model) and tests/test_real_model.py.
PLAIN_HEAD_ARCHITECTURES = frozenset({"gemma3"})


class OutputTensor(NamedTuple):
    name: str
    ggml_type: int
    n_vocab: int
    n_embd: int
    offset: int  # absolute, in the file
    architecture: str


def output_tensor(path: str | Path) -> OutputTensor | None:
    """A GGUF's output matrix: `output.weight`, or the tied `token_embd.weight` when there is
    none; None if neither.

    A reader of our own, because it needs only the tensor table: gguf.GGUFReader builds numpy
    views of every metadata item, which for Gemma-3's 262,144-token vocabulary took 13 s."""
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        def u32(at: int) -> tuple[int, int]:
            return struct.unpack_from("<I", m, at)[0], at + 4

        def u64(at: int) -> tuple[int, int]:
            return struct.unpack_from("<Q", m, at)[0], at + 8

        def string(at: int) -> tuple[bytes, int]:
            n, at = u64(at)
            return m[at : at + n], at + n

        def skip_value(kind: int, at: int) -> int:
            if kind in _SCALAR_SIZES:
                return at + _SCALAR_SIZES[kind]
            if kind == 8:
                return string(at)[1]
            if kind == 9:
                item, at = u32(at)
                count, at = u64(at)
                if item in _SCALAR_SIZES:
                    return at + count * _SCALAR_SIZES[item]
                for _ in range(count):
                    at = skip_value(item, at)
                return at
            raise ValueError(f"{path}: unknown GGUF value type {kind}")

        if m[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version, at = u32(4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        n_tensors, at = u64(at)
        n_kv, at = u64(at)
        alignment, arch = 32, ""
        for _ in range(n_kv):
            key, at = string(at)
            kind, at = u32(at)
            if key == b"general.alignment" and kind == 4:
                alignment = u32(at)[0]
            elif key == b"general.architecture" and kind == 8:
                arch = string(at)[0].decode("ascii", "replace")
            at = skip_value(kind, at)
        infos = {}
        for _ in range(n_tensors):
            name, at = string(at)
            n_dims, at = u32(at)
            dims = struct.unpack_from(f"<{n_dims}Q", m, at)
            at += 8 * n_dims
            ggml_type, at = u32(at)
            offset, at = u64(at)
            infos[name.decode("utf-8", "replace")] = (ggml_type, dims, offset)
        data_start = -(-at // alignment) * alignment
    name = "output.weight" if "output.weight" in infos else "token_embd.weight"
    if name not in infos or len(infos[name][1]) != 2:
        return None
    ggml_type, (n_embd, n_vocab), offset = infos[name]
    return OutputTensor(name, ggml_type, n_vocab, n_embd, data_start + offset, arch)


class Q8Head:
    """logits = W h for a Q8_0 matrix W, computed by cext/head.c, split over threads by vocabulary
    groups (each logit is computed by one thread in one fixed order, so the split never changes
    the bits)."""

    def __init__(self, packed: np.ndarray, wsum: np.ndarray, dw: np.ndarray, n_vocab: int, n_embd: int,
                 threads: int = 1):
        self.packed, self.wsum, self.dw = packed, wsum, dw
        self.n_vocab, self.n_embd = n_vocab, n_embd
        self.groups = -(-n_vocab // GROUP)
        self.threads = max(1, threads)
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(self.threads - 1, thread_name_prefix="nczip-head")
            if self.threads > 1 else None
        )
        self._out = np.empty((0, n_vocab), dtype=np.float32)
        self.portable = False  # tests force the plain C loop to compare it with the SIMD kernel
        self.source_offset = self.source_bytes = 0  # where the matrix lies in its file

    @classmethod
    def from_gguf(cls, path: str | Path, threads: int = 1) -> Q8Head | None:
        """The head of a GGUF whose output matrix is Q8_0 and whose architecture has a plain
        head (PLAIN_HEAD_ARCHITECTURES); None otherwise."""
        t = output_tensor(path)
        if (t is None or t.ggml_type != _GGML_TYPE_Q8_0 or t.n_embd % Q8_0_BLOCK
                or t.architecture not in PLAIN_HEAD_ARCHITECTURES):
            return None
        head = cls(*pack_q8_0(path, t.offset, t.n_vocab, t.n_embd), t.n_vocab, t.n_embd, threads)
        head.source_offset, head.source_bytes = t.offset, t.n_vocab * (t.n_embd // Q8_0_BLOCK) * Q8_0_BYTES
        return head

    def __call__(self, hidden: np.ndarray) -> np.ndarray:
        """Logits (rows x n_vocab, float32) of hidden states (rows x n_embd, float32). The array
        is reused by the next call, as llama.cpp's logits buffer is."""
        hidden = np.ascontiguousarray(hidden, dtype=np.float32)
        rows = hidden.shape[0]
        if hidden.shape != (rows, self.n_embd) or rows == 0:
            raise ValueError(f"hidden states must be (rows >= 1, {self.n_embd}), got {hidden.shape}")
        if self._out.shape[0] < rows:
            self._out = np.empty((rows, self.n_vocab), dtype=np.float32)
        out = self._out[:rows]
        bounds = [self.groups * i // self.threads for i in range(self.threads + 1)]

        def part(i: int) -> None:
            _cext.head_q8(self.packed, self.wsum, self.dw, hidden, out, self.n_vocab, self.n_embd, rows,
                          bounds[i], bounds[i + 1], self.portable)

        if self._pool is None:
            part(0)
        else:
            others = [self._pool.submit(part, i) for i in range(1, self.threads)]
            part(0)
            for f in others:
                f.result()
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def pack_q8_0(path: str | Path, offset: int, n_vocab: int, n_embd: int):
    """(packed int8, wsum int32, dw float32) in cext/head.c's layout, from the Q8_0 matrix at
    `offset` in the file (n_vocab rows of n_embd values)."""
    nb = n_embd // Q8_0_BLOCK
    groups = -(-n_vocab // GROUP)
    packed = np.zeros((groups, nb, Q8_0_BLOCK // 4, GROUP, 4), dtype=np.int8)
    wsum = np.zeros((groups, nb, GROUP), dtype=np.int32)
    dw = np.zeros((groups, nb, GROUP), dtype=np.float32)
    row_bytes = nb * Q8_0_BYTES
    with open(path, "rb") as f:
        f.seek(offset)
        for start in range(0, groups * GROUP, _CHUNK_ROWS):
            rows = min(_CHUNK_ROWS, n_vocab - start)
            if rows <= 0:
                break
            raw = np.frombuffer(f.read(rows * row_bytes), dtype=np.uint8)
            if raw.size != rows * row_bytes:
                raise ValueError(f"{path}: the output matrix ends early (truncated file?)")
            blocks = raw.reshape(rows, nb, Q8_0_BYTES)
            scale = blocks[:, :, :2].copy().view(np.float16).reshape(rows, nb).astype(np.float32)
            quants = blocks[:, :, 2:].view(np.int8)
            padded = -(-rows // GROUP) * GROUP
            if padded != rows:  # the last group's missing rows stay zero: their logits are dropped
                quants = np.concatenate([quants, np.zeros((padded - rows, nb, Q8_0_BLOCK), np.int8)])
                scale = np.concatenate([scale, np.zeros((padded - rows, nb), np.float32)])
            g0, g1 = start // GROUP, start // GROUP + padded // GROUP
            q = quants.reshape(g1 - g0, GROUP, nb, Q8_0_BLOCK // 4, 4)
            packed[g0:g1] = q.transpose(0, 2, 3, 1, 4)
            sums = quants.sum(axis=2, dtype=np.int32) * 128
            wsum[g0:g1] = sums.reshape(g1 - g0, GROUP, nb).transpose(0, 2, 1)
            dw[g0:g1] = scale.reshape(g1 - g0, GROUP, nb).transpose(0, 2, 1)
    return packed, wsum, dw
