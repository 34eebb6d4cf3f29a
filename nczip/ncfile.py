"""nczip.open(): archives as binary file objects that stream, like gzip.open and zstandard.open.

Writing codes a segment as soon as a whole one has arrived (see segment.py), so the original is
held one segment at a time; the archive itself (about an eighth of the original) is written when
the file is closed, because its header records the size and SHA-256 of everything written.
Reading checks the header and segment table first, then decodes one segment at a time; the
output's size and SHA-256 are checked when the last segment has been read, and a mismatch raises
ChecksumError from that read.
"""
from __future__ import annotations

import builtins
import io
import os
from typing import BinaryIO

from . import container, segment
from .api import Compressor
from .errors import FormatError

_READ_MODES = {"r", "rb"}
_WRITE_MODES = {"w", "wb", "x", "xb"}


def open(
    file: str | bytes | os.PathLike | BinaryIO,
    mode: str = "rb",
    *,
    compressor: Compressor | None = None,
    **options,
) -> NczipFile:
    """Open an nczip archive for reading ("rb") or writing ("wb", "xb"), by path or file object.

    Pass a `compressor` to reuse a loaded model, or the Compressor options (model, threads,
    window, ...) to make one for this file.

    >>> import io, nczip
    >>> buffer = io.BytesIO()
    >>> with nczip.open(buffer, "wb") as f:
    ...     f.write(b"Streams, ") + f.write(b"in pieces.")
    19
    >>> with nczip.open(io.BytesIO(buffer.getvalue())) as f:
    ...     f.read(8), f.read()
    (b'Streams,', b' in pieces.')
    """
    if mode not in _READ_MODES | _WRITE_MODES:
        raise ValueError(f"mode must be one of 'rb', 'wb', 'xb' (text modes: wrap in io.TextIOWrapper), got {mode!r}")
    if compressor is not None and options:
        raise ValueError("pass either a compressor or Compressor options, not both")
    owns_compressor = compressor is None
    compressor = compressor or Compressor(**options)
    if isinstance(file, (str, bytes, os.PathLike)):
        fileobj = builtins.open(file, mode if "b" in mode else mode + "b")
        owns_file = True
    elif hasattr(file, "read") or hasattr(file, "write"):
        fileobj, owns_file = file, False
    else:
        raise TypeError(f"file must be a path or a binary file object, not {type(file).__name__}")
    return NczipFile(fileobj, "r" if mode in _READ_MODES else "w", compressor, owns_compressor, owns_file)


class NczipFile(io.BufferedIOBase):
    """A binary file object over an nczip archive; see open()."""

    def __init__(self, fileobj: BinaryIO, mode: str, compressor: Compressor, owns_compressor: bool, owns_file: bool):
        super().__init__()
        self._fileobj = fileobj
        self._mode = mode
        self._compressor = compressor
        self._owns_compressor = owns_compressor
        self._owns_file = owns_file
        if mode == "w":
            self._builder = compressor.archive_builder()
            self._pending = bytearray()
        else:
            self._parts = None  # the decoded segments, from the first read on
            self._buffer = memoryview(b"")

    # -- io.BufferedIOBase ----------------------------------------------------------------------
    def readable(self) -> bool:
        self._check_open()
        return self._mode == "r"

    def writable(self) -> bool:
        self._check_open()
        return self._mode == "w"

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        self._check_open()
        if self._mode != "w":
            raise io.UnsupportedOperation("not writable: opened for reading")
        view = memoryview(data).cast("B")
        self._pending += view
        while len(self._pending) > segment.SEGMENT_BYTES:
            cut = segment.cut_point(self._pending)
            self._builder.add(bytes(self._pending[:cut]))
            del self._pending[:cut]
        return len(view)

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if self._mode != "r":
            raise io.UnsupportedOperation("not readable: opened for writing")
        if size is None or size < 0:
            parts = [bytes(self._buffer)]
            self._buffer = memoryview(b"")
            while self._fill():
                parts.append(bytes(self._buffer))
                self._buffer = memoryview(b"")
            return b"".join(parts)
        while not len(self._buffer) and self._fill():
            pass
        out = bytes(self._buffer[:size])
        self._buffer = self._buffer[size:]
        return out

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, b) -> int:
        data = self.read(len(memoryview(b)))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._mode == "w":
                if self._pending:
                    self._builder.add(bytes(self._pending))
                    self._pending = bytearray()
                container.write_archive_to(self._builder.finish(), self._fileobj)
                self._fileobj.flush()
        finally:
            try:
                if self._owns_file:
                    self._fileobj.close()
                if self._owns_compressor:
                    self._compressor.close()
            finally:
                super().close()

    # -- reading, one segment at a time -----------------------------------------------------------
    def _fill(self) -> bool:
        """Decode the next segment into the buffer; False at the end of the archive."""
        if self._parts is None:
            self._parts = self._compressor.decode_segments(*self._segments())
        part = next(self._parts, None)
        if part is None:
            return False
        self._buffer = memoryview(part)
        return True

    def _segments(self):
        """(header, methods, payloads) of the archive, its payloads read one at a time; nothing may
        follow the last one."""
        header, entries, stream = container.read_prefix(self._fileobj)

        def payloads():
            for index, entry in enumerate(entries):
                payload = container.read_payload(stream, entry, index, len(entries))
                if index == len(entries) - 1 and stream.read(1):
                    raise FormatError("unexpected bytes after the last segment")
                yield entry.method, entry.original_size, entry.token_count, payload
            if not entries and stream.read(1):
                raise FormatError("unexpected bytes after the last segment")

        return header, [entry.method for entry in entries], payloads()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
