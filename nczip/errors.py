"""One exception family for everything nczip reports to a user.

NczipError subclasses OSError, like gzip.BadGzipFile, so callers that already handle I/O errors
handle ours; the CLI turns any of them into one line on stderr and exit status 1.
"""


class NczipError(OSError):
    """Base class of every error nczip raises on purpose."""


class FormatError(NczipError):
    """The input is not an nczip archive, or its structure is damaged."""


class TruncatedError(FormatError):
    """The archive ends before the structure it describes."""


class UnsupportedVersionError(FormatError):
    """The archive was written by a newer format version than this nczip reads."""


class CorruptSegmentError(FormatError):
    """A segment's payload failed its checksum or did not decode cleanly."""

    def __init__(self, message: str, segment_index: int | None = None):
        super().__init__(message)
        self.segment_index = segment_index


class ChecksumError(NczipError):
    """The decoded bytes do not match the length or checksum recorded at compression."""


class ModelMismatchError(NczipError):
    """The archive needs a different model, backend or parameters than the ones available."""


class DriftError(NczipError):
    """The decoder's model computes different floats than the encoder's did (caught at a
    checkpoint), so decoding would only produce garbage from here on."""

    def __init__(self, message: str, segment_index: int | None = None, token_index: int | None = None):
        super().__init__(message)
        self.segment_index = segment_index
        self.token_index = token_index
