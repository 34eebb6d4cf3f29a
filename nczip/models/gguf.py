"""A GGUF file's metadata and tensor table, read with the standard library and numpy.

Why not `gguf.GGUFReader` (the gguf package, llama.cpp's own reader): it builds numpy views of
every metadata item, which took 13 s for Gemma-3's 262,144-token vocabulary, and it is a
dependency nczip does not otherwise need. The format is small: a header, key/value pairs and a
tensor table, all little-endian (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Value types: fixed-size scalars by numpy dtype; 8 is a string, 9 an array.
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY, _BOOL = 8, 9, 7


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length (the fastest dimension)
    offset: int  # absolute, in the file

    @property
    def n_in(self) -> int:
        return self.shape[0]

    @property
    def n_out(self) -> int:
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n


class GGUFFile:
    """Metadata (`meta`: key -> value; arrays of numbers as numpy arrays, strings as bytes) and
    tensors (`tensors`: name -> TensorInfo). `data(info)` is a read-only view of a tensor's bytes
    in the memory-mapped file; close() releases the mapping."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
            self.close()
            raise ValueError(f"{self.path}: not a readable GGUF file ({exc})") from None

    def _parse(self) -> None:
        m = self._map
        if m[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", m, 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        at = 24
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key, at = self._string(at)
            (kind,) = struct.unpack_from("<I", m, at)
            value, at = self._value(kind, at + 4)
            meta[key.decode("utf-8")] = value
        infos: dict[str, tuple[int, tuple[int, ...], int]] = {}
        for _ in range(n_tensors):
            name, at = self._string(at)
            (n_dims,) = struct.unpack_from("<I", m, at)
            dims = struct.unpack_from(f"<{n_dims}Q", m, at + 4)
            at += 4 + 8 * n_dims
            ggml_type, offset = struct.unpack_from("<IQ", m, at)
            at += 12
            infos[name.decode("utf-8")] = (ggml_type, tuple(dims), offset)
        alignment = int(meta.get("general.alignment", 32))
        data_start = -(-at // alignment) * alignment
        self.meta = meta
        self.tensors = {
            name: TensorInfo(name, t, dims, data_start + off) for name, (t, dims, off) in infos.items()
        }

    def _string(self, at: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from("<Q", self._map, at)
        end = at + 8 + n
        if end > len(self._map):
            raise ValueError("a string runs past the end of the file")
        return self._map[at + 8 : end], end

    def _value(self, kind: int, at: int) -> tuple[Any, int]:
        m = self._map
        if kind in _SCALARS:
            dtype = np.dtype(_SCALARS[kind])
            value = np.frombuffer(m, dtype, 1, at)[0].item()
            return (bool(value) if kind == _BOOL else value), at + dtype.itemsize
        if kind == _STRING:
            return self._string(at)
        if kind == _ARRAY:
            item, count = struct.unpack_from("<IQ", m, at)
            at += 12
            if item in _SCALARS:
                dtype = np.dtype(_SCALARS[item])
                if at + count * dtype.itemsize > len(m):
                    raise ValueError("an array runs past the end of the file")
                return np.frombuffer(m, dtype, count, at).copy(), at + count * dtype.itemsize
            values = []
            for _ in range(count):
                value, at = self._value(item, at)
                values.append(value)
            return values, at
        raise ValueError(f"unknown metadata value type {kind}")

    def data(self, info: TensorInfo, nbytes: int) -> memoryview:
        if info.offset + nbytes > len(self._map):
            raise ValueError(f"{self.path}: tensor {info.name} runs past the end of the file (truncated?)")
        return memoryview(self._map)[info.offset : info.offset + nbytes]

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive; the mapping goes with it
                pass
            self._map = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
