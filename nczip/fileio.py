"""Atomic output: a temporary file beside the target, flushed and fsynced, then renamed.

A reader of the target path sees either nothing (or the old file) or the complete new file,
never a partial one, whatever happens to this process.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def write_atomic(path: str | os.PathLike, data: bytes, *, like: os.stat_result | None = None) -> None:
    """Write `data` to `path` atomically; copy permission bits and times from `like` (as gzip does)."""
    with atomic_writer(path, like=like) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, like: os.stat_result | None = None) -> Iterator[BinaryIO]:
    """A file to write `path` through: a temporary file beside it, renamed over `path` only when
    the block ends normally (flushed and fsynced first); on any exception it is removed."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".nczip-tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            os.chmod(tmp, like.st_mode & 0o7777)
            os.utime(tmp, ns=(like.st_atime_ns, like.st_mtime_ns))
        else:
            # mkstemp makes the file 0600; a new file from a stream gets the usual 0666 & ~umask.
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
