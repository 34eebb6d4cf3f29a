"""nczip: lossless compression of text with a language model as the predictor."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nczip")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from .api import Compressor, compress, decompress  # noqa: E402
from .ncfile import NczipFile, open  # noqa: E402
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
