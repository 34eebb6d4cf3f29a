"""The pipeline, one way each: bytes -> segments -> archive (ArchiveBuilder) and an archive's
segments -> bytes (decode_segments). The library (api.Compressor), nczip.open and the CLI all
drive these two.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from . import binary, container, route, segment, tokens
from .container import Archive, Header, Method, Segment
from .errors import ChecksumError, FormatError, ModelMismatchError
from .models.backends import ModelSlot
from .params import CodecParams, CodingStats, HeaderParamsError, header_params, params_from_header

if TYPE_CHECKING:  # the codec and the model bring numpy and a backend: imported where used
    from .models.llm import LanguageModel

# Called with (bytes done, tokens done) since the last call.
Progress = Callable[[int, int], None]


def coding_params(params: CodecParams, auto_checkpoints: bool, model: LanguageModel) -> CodecParams:
    """The settings to code with on `model`: `params`, and with auto_checkpoints (check_every not
    given), no drift checkpoints where the backend's floats are the same on every machine."""
    if auto_checkpoints and getattr(model, "portable", False):
        return dataclasses.replace(params, check_every=0)
    return params


@dataclasses.dataclass(frozen=True)
class CodedChunk:
    """One chunk's coding: its segments, the binary coding of the whole chunk (the guards'
    yardstick; None on route "llm"), and what the model segments were coded with (backend id,
    vocabulary size and settings; None without one). Plain data, so a Ray worker can send it."""

    segments: tuple[Segment, ...]
    whole: Segment | None
    backend_id: str | None
    n_vocab: int
    params: CodecParams | None
    tokens: int


class ChunkEncoder:
    """Codes chunks, each independently of the others: the same bytes wherever it runs (a local
    ArchiveBuilder, or a Ray worker: distributed.py)."""

    def __init__(self, slot: ModelSlot, params: CodecParams, auto_checkpoints: bool, route_name: str):
        self.slot = slot
        self.params = params
        self.auto_checkpoints = auto_checkpoints
        self.route = route_name

    def encode(self, chunk: bytes, progress: Progress | None = None, stats: CodingStats | None = None) -> CodedChunk:
        """The segments of one chunk: its text spans (route.py) coded by the LLM, its binary spans
        by stored, zstd or lzma, whichever is smallest.

        Two guards keep the result from ever being worse than the plain codecs: a text span
        whose LLM payload is larger than its binary coding is kept in that coding, and a chunk
        whose segments together are larger than the binary coding of the whole chunk becomes
        that one segment."""
        self._used = None
        stats = stats if stats is not None else CodingStats()
        before = stats.tokens
        segments, whole = self._segments(chunk, progress, stats)
        model = self._used
        return CodedChunk(
            tuple(segments), whole,
            model.identity.backend if model is not None else None,
            model.n_vocab if model is not None else 0,
            coding_params(self.params, self.auto_checkpoints, model) if model is not None else None,
            stats.tokens - before,
        )

    def _segments(self, chunk: bytes, progress, stats) -> tuple[list[Segment], Segment | None]:
        if self.route == "llm":
            return [self._encode_text(chunk, progress, stats)], None
        spans = route.plan(chunk)
        segments = []
        whole = None
        for span in spans:
            part = chunk[span.start : span.end]
            fallback = _binary_segment(part)
            if len(spans) == 1:
                whole = fallback
            if span.text:
                coded = self._encode_text(part, progress, stats)
                segments.append(coded if len(coded.payload) < len(fallback.payload) else fallback)
            else:
                segments.append(fallback)
                if progress is not None:
                    progress(len(part), 0)
        if whole is None:
            whole = _binary_segment(chunk)
            if len(whole.payload) <= sum(len(s.payload) + container.RECORD_BYTES for s in segments) - container.RECORD_BYTES:
                return [whole], whole
        return segments, whole

    def _encode_text(self, text: bytes, progress, stats) -> Segment:
        from . import codec

        model = self.slot.for_encoding(self.params.window)
        ids = tokens.tokenize_exact(text, model)
        params = coding_params(self.params, self.auto_checkpoints, model)
        payload = codec.encode_tokens(model, ids, params, progress=_token_progress(model, progress), stats=stats)
        self._used = model
        return Segment(Method.LLM, len(text), len(ids), payload)


class ArchiveBuilder:
    """Takes the input chunk by chunk (each at most 1 MiB, as segment.py cuts it) and assembles
    the archive when the input is complete. A chunk is coded by `encoder` (add), or comes coded
    from elsewhere (add_coded: distributed.py). `stats` is what coding measured."""

    def __init__(self, encoder: ChunkEncoder, progress: Progress | None, stats: CodingStats, cluster=None):
        self.encoder = encoder
        self.cluster = cluster  # a distributed.Cluster codes add_stream's chunks, when there is one
        self._progress = progress
        self.stats = stats
        self._segments: list[Segment] = []
        self._hash = hashlib.sha256()
        self._size = 0
        self._chunks = 0
        self._whole: Segment | None = None  # the latest chunk's binary coding (used if it is the only one)
        self._coded_with: CodedChunk | None = None  # a chunk with model segments, for the header

    def add(self, chunk: bytes | memoryview) -> None:
        """One segment's bytes (at most segment.SEGMENT_BYTES)."""
        chunk = bytes(chunk)
        if chunk:
            self.add_coded(chunk, self.encoder.encode(chunk, self._progress, self.stats), counted=True)

    def add_coded(self, chunk: bytes, coded: CodedChunk, *, counted: bool = False) -> None:
        """A chunk and its coding, in input order (counted: its tokens are in stats already)."""
        self._segments += coded.segments
        self._whole = coded.whole
        if coded.backend_id is not None:
            self._coded_with = coded
        if not counted:
            self.stats.tokens += coded.tokens
        self._chunks += 1
        self._hash.update(chunk)
        self._size += len(chunk)

    def add_stream(self, read: Callable[[int], bytes]) -> int:
        """Everything read(n) returns until b"", cut into segments; returns the bytes read."""
        if self.cluster is not None:
            return self.cluster.encode_stream(self, read, self._progress)
        before = self._size
        for part in segment.split_stream(read):
            self.add(part)
        return self._size - before

    def finish(self) -> Archive:
        uses_model = any(s.method == Method.LLM for s in self._segments)
        header = self._header(uses_model)
        archive = Archive(header, tuple(self._segments))
        if self._chunks == 1 and self._whole is not None:
            # The whole-file guard: the SINGLE form of the plain coding of everything, when the
            # model's header and savings, or the split into several segments, do not pay for
            # themselves (short inputs); exact sizes, whatever the segments are.
            plain = Archive(self._header(uses_model=False), (self._whole,))
            if container.archive_size(plain) <= container.archive_size(archive):
                return plain
        return archive

    def _header(self, uses_model: bool) -> Header:
        size, sha256 = self._size, self._hash.digest()
        coded = self._coded_with
        if not uses_model or coded is None:
            # No segment needs a model: the archive names none, and decodes without one.
            return Header(backend="", model_name="", model_sha256=bytes(32), original_size=size,
                          original_sha256=sha256, params={})
        model_file = self.encoder.slot.model_file()
        return Header(backend=coded.backend_id, model_name=model_file.name, model_sha256=model_file.sha256,
                      original_size=size, original_sha256=sha256, params=header_params(coded.params, coded.n_vocab))


def check_header(header: Header) -> CodecParams:
    """The coding parameters an archive asks for, or a clear error if this nczip cannot honour them."""
    if not header.original_size or not header.backend:
        return CodecParams()  # nothing to decode, or nothing for a model to decode: no parameter matters
    try:
        return params_from_header(header.params)
    except HeaderParamsError as exc:
        raise (ModelMismatchError if exc.newer else FormatError)(str(exc)) from None


def check_model(slot: ModelSlot, header: Header, params: CodecParams, methods: Sequence[Method]) -> None:
    """ModelMismatchError unless `slot` can decode the archive's LLM segments (`methods`: every
    segment's); nothing to check without one. Called before any segment's bytes are handed out,
    so the wrong model is refused before the first byte even when segments that need no model
    (stored, zstd, lzma) come first."""
    if Method.LLM in methods:
        _model_for(slot, header, params)


def _model_for(slot: ModelSlot, header: Header, params: CodecParams) -> LanguageModel:
    return slot.for_archive(header.backend, header.model_sha256, header.model_name, header.params["n_vocab"],
                            params.window)


def decode_segments(slot: ModelSlot, header: Header, methods: Sequence[Method], payloads: Iterator[tuple],
                    progress: Progress | None = None) -> Iterator[bytes]:
    """The original bytes, one segment at a time. `payloads` yields each segment's (method,
    original size, token count, payload), the payload already checked against its CRC-32. The
    header's parameters and the model are checked before the first segment; the size and
    SHA-256 of the whole before the last segment's bytes are handed out, so a caller that has
    taken every part holds the verified original."""
    params = check_header(header)
    check_model(slot, header, params, methods)
    digest, size, count = hashlib.sha256(), 0, len(methods)
    for index, (method, original_size, token_count, payload) in enumerate(payloads):
        part = decode_segment(slot, header, params, index, count, method, original_size, token_count, payload,
                              progress)
        digest.update(part)
        size += len(part)
        if index == count - 1:
            verify_output(header, size, digest.digest())
        yield part
    if count == 0:
        verify_output(header, size, digest.digest())


def decode_segment(slot: ModelSlot, header: Header, params: CodecParams, index: int, count: int, method: Method,
                   original_size: int, token_count: int, payload: bytes, progress: Progress | None = None) -> bytes:
    """One segment's payload (already CRC-checked) back into its original bytes."""
    if method in (Method.STORED, Method.ZSTD, Method.LZMA):
        part = binary.decode(method, payload, original_size, f"segment {index + 1} of {count}")
        if progress is not None:
            progress(len(part), 0)
    elif method == Method.LLM:
        if not header.backend:
            raise FormatError(f"segment {index + 1} of {count} needs a model, but the archive names none")
        from . import codec

        model = _model_for(slot, header, params)
        ids = codec.decode_tokens(model, payload, token_count, params, segment_index=index,
                                  progress=_token_progress(model, progress))
        part = tokens.detokenize(ids, model)
    else:
        raise FormatError(f"segment {index + 1} of {count}: method {method.name} is not supported by this nczip")
    if len(part) != original_size:
        raise ChecksumError(f"segment {index + 1} of {count} decoded to {len(part)} bytes, expected {original_size}")
    return part


def verify_output(header: Header, size: int, sha256: bytes) -> None:
    """The decoded bytes against the archive's record: their size, and their SHA-256 (of which a
    COMPACT archive keeps the first 8 bytes)."""
    same = sha256[: len(header.original_sha256)] == header.original_sha256
    if size != header.original_size or not same:
        raise ChecksumError(
            f"decoded data does not match the archive's record ({size} bytes decoded, "
            f"{header.original_size} expected; SHA-256 {'matches' if same else 'differs'})"
        )


def _binary_segment(data: bytes) -> Segment:
    method, payload = binary.encode(data)
    return Segment(method, len(data), 0, payload)


def _token_progress(model: LanguageModel, progress: Progress | None):
    """Adapt a (bytes, tokens) progress callback to the codec's token-id callback."""
    if progress is None:
        return None
    return lambda ids: progress(sum(len(model.piece(t)) for t in ids), len(ids))
