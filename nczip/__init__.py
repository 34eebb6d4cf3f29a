"""nczip: lossless compression of text with a language model as the predictor."""
# The one place the version is written (pyproject.toml reads it): importlib.metadata would cost
# ~35 ms of every start.
__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ChecksumError,
    CorruptSegmentError,
    DriftError,
    FormatError,
    ModelMismatchError,
    NczipError,
    TruncatedError,
    UnsupportedVersionError,
)

__all__ = [
    "Compressor",
    "compress",
    "decompress",
    "open",
    "NczipFile",
    "NczipError",
    "FormatError",
    "TruncatedError",
    "UnsupportedVersionError",
    "CorruptSegmentError",
    "ChecksumError",
    "DriftError",
    "ModelMismatchError",
    "__version__",
]


# The pipeline brings numpy and, on first use, llama.cpp: imported when first asked for, so that
# `nczip` on a binary file, `nczip info` and `nczip --help` start fast.
_LAZY = {"Compressor": "api", "compress": "api", "decompress": "api", "open": "ncfile", "NczipFile": "ncfile"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
