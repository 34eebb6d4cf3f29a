"""The codecs for bytes the LLM should not see: stored, zstd and lzma.

zstandard (python-zstandard, the reference library's own bindings) and the standard library's
lzma (liblzma, the code behind xz) rather than anything of our own: both are the best general
compressors in their speed class and decode everywhere. Their payloads are bare: a zstd frame
without its checksum and a raw LZMA2 stream without the .xz wrapper (~60 bytes), because the
container already checks every payload (CRC-32) and the whole output (SHA-256).

Decoding is bounded: a payload never expands past the size the segment table records, so a
forged payload cannot allocate more than the segment it claims to be.
"""
from __future__ import annotations

import lzma
import threading

import zstandard

from .container import Method
from .errors import CorruptSegmentError

ZSTD_LEVEL = 19
# LZMA2 at xz's -9 settings over a 1 MiB dictionary: a coded segment is at most 1 MiB
# (segment.SEGMENT_BYTES), so a larger dictionary finds nothing more, and this one keeps the
# encoder's memory near 12 MB instead of xz -9's 674 MB.
LZMA_DICT_BYTES = 1 << 20
LZMA_PRESET = 9
_LZMA_ENCODE = [{"id": lzma.FILTER_LZMA2, "preset": LZMA_PRESET, "dict_size": LZMA_DICT_BYTES}]
_LZMA_DECODE = [{"id": lzma.FILTER_LZMA2, "dict_size": LZMA_DICT_BYTES}]
# zstd at level 1 first: data it cannot shrink by 1% is already compressed (JPEG, PNG, zip, gz),
# and zstd -19 and lzma would spend their time for nothing. Level 1, not zlib: its window
# (512 KiB) sees a JPEG that occurs twice. Inputs up to PROBE_FROM bytes skip the probe: there
# both codecs take milliseconds, and a probe's misjudgment costs more than the 64-byte margin
# (170 bytes of text before 409 random ones: zlib -1 saved < 1%, zstd -19 13 bytes).
INCOMPRESSIBLE = 0.99
PROBE_FROM = 1 << 16
# Below this both codecs take about a millisecond: a thread would cost more than it saves.
PARALLEL_FROM = 1 << 14


def encode(data: bytes | memoryview) -> tuple[Method, bytes]:
    """The smallest of stored, zstd and lzma for `data` (ties go to the faster decoder)."""
    data = bytes(data)
    if not data:
        return Method.STORED, data
    if len(data) > PROBE_FROM:
        probe = zstandard.ZstdCompressor(level=1, write_checksum=False).compress(data)
        if len(probe) >= INCOMPRESSIBLE * len(data):
            return Method.STORED, data
    # Both, always: neither wins everywhere (lzma by 1-50% on tables and protobufs, zstd on
    # PDFs), and no cheap test predicted which (a gate on zstd's ratio missed a 2x lzma win).
    # Both release the GIL while they compress, so on two cores zstd runs in a thread beside
    # lzma and the pair takes the slower one's time instead of the sum.
    if len(data) >= PARALLEL_FROM:
        zstd_out: list[bytes] = []
        worker = threading.Thread(target=_zstd_into, args=(data, zstd_out), name="nczip-zstd")
        worker.start()
        xz = _lzma_encode(data)
        worker.join()
        # The thread failed (MemoryError): again here, where an error reaches the caller.
        zstd = zstd_out[0] if zstd_out else _zstd_encode(data)
    else:
        zstd, xz = _zstd_encode(data), _lzma_encode(data)
    best = (Method.STORED, data)
    if len(zstd) < len(best[1]):
        best = (Method.ZSTD, zstd)
    if len(xz) < len(best[1]):
        best = (Method.LZMA, xz)
    return best


def _zstd_encode(data: bytes) -> bytes:
    zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=False, write_content_size=True).compress(data)
    # python-zstandard returns its output in a buffer sized for the worst case (the input's size):
    # copied, a 100-byte frame holds 100 bytes, not 1 MiB, while the archive is assembled.
    return memoryview(zstd).tobytes()


def _zstd_into(data: bytes, out: list[bytes]) -> None:
    try:
        out.append(_zstd_encode(data))
    except Exception:  # noqa: BLE001 - encode() retries in its own thread and lets it raise there
        pass


def _lzma_encode(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_ENCODE)


def decode(method: Method, payload: bytes, size: int, where: str) -> bytes:
    """The `size` original bytes of a STORED, ZSTD or LZMA payload; `where` names the segment
    in errors ("segment 2 of 5")."""
    if method == Method.STORED:
        out = payload
    elif method == Method.ZSTD:
        out = _zstd_decode(payload, size, where)
    elif method == Method.LZMA:
        out = _lzma_decode(payload, size, where)
    else:
        raise ValueError(f"not a binary method: {method!r}")
    if len(out) != size:
        raise CorruptSegmentError(f"{where} is damaged: it decodes to {len(out)} bytes, expected {size}")
    return out


def _zstd_decode(payload: bytes, size: int, where: str) -> bytes:
    try:
        if zstandard.frame_content_size(payload) != size:
            raise CorruptSegmentError(f"{where} is damaged: its zstd frame does not record {size} bytes")
        reader = zstandard.ZstdDecompressor().stream_reader(payload)
        chunks, total = [], 0
        while total <= size:  # at most size + 1 bytes, so a longer frame is seen, not expanded
            chunk = reader.read(size + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    except zstandard.ZstdError as exc:
        raise CorruptSegmentError(f"{where} is damaged: zstd: {exc}") from None


def _lzma_decode(payload: bytes, size: int, where: str) -> bytes:
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_DECODE)
    try:
        out = decoder.decompress(payload, max_length=size + 1)
    except lzma.LZMAError as exc:
        raise CorruptSegmentError(f"{where} is damaged: lzma: {exc}") from None
    if not decoder.eof or decoder.unused_data:
        raise CorruptSegmentError(f"{where} is damaged: its lzma stream does not end where the payload ends")
    return out
