"""compress / decompress bytes: the facade the CLI, scripts and nczip.open() call.

bytes -> segments -> tokens -> coder -> container, and back (pipeline.py). A Compressor holds its
settings and the loaded model, so that many inputs do not reload it.
"""
from __future__ import annotations

import io
import os
from typing import Iterator, Sequence

from . import container, pipeline
from .container import Header, Method
from .models.backends import BACKENDS, ModelSlot, backend_of
from .models.registry import ModelFile
from .params import CODEC_PRESETS, DEFAULT_LEVEL, SLIDES, CodecParams, CodingStats, codec_params  # noqa: F401
from .pipeline import ArchiveBuilder, Progress, check_header, verify_output  # noqa: F401 (the API's names)

ROUTES = ("auto", "llm")


def physical_cores() -> int:
    """Physical cores available to us: hyper-threads share a core's FPU and slow the model down."""
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

    Options have the CLI's names and defaults: ``model`` (a GGUF path, or a transformers model
    directory for torch; None: the default Gemma-3-270M), ``threads`` (None: physical cores),
    ``level`` (1 fastest .. 9 smallest, default 6: a preset of the settings below, each of which
    may also be given: ``window`` and ``keep`` context tokens, ``lanes`` coded in lockstep,
    ``lane_tokens`` the fewest per lane, ``primer`` tokens coded on one lane first, ``cdf_bits``,
    ``check_every`` steps between drift checkpoints, None: only for backends whose floats depend
    on the machine), ``llm_only`` (leave out the n-gram, match and bias models beside the LLM),
    ``route`` ("auto": text to the LLM, binary to zstd or lzma, never worse than those; "llm":
    every byte to the LLM), ``backend`` ("engine", nczip's own, the default for Gemma-3 GGUFs;
    "llama": llama.cpp; "torch": PyTorch and transformers; decoding uses the archive's own),
    ``backend_id`` (compress with this arithmetic of the backend, e.g. an earlier llama.cpp id),
    ``device`` (torch's "cpu" or "cuda"; None: cuda if present) and ``slide`` ("shift" drops a full
    window's oldest tokens from the cache; "restart" evaluates BOS + the last ``keep`` again, the
    torch backend's only way). Invalid values raise ValueError naming the valid range.

    >>> from nczip import Compressor
    >>> with Compressor() as c:
    ...     archive = c.compress(b"Hello, world!\\n")
    ...     c.decompress(archive)
    b'Hello, world!\\n'
    """

    def __init__(self, *, model: str | os.PathLike | None = None, threads: int | None = None,
                 level: int = DEFAULT_LEVEL, window: int | None = None, keep: int | None = None,
                 cdf_bits: int | None = None, check_every: int | None = None, lanes: int | None = None,
                 lane_tokens: int | None = None, primer: int | None = None, llm_only: bool = False,
                 route: str = "auto", backend: str | None = None, backend_id: str | None = None,
                 device: str | None = None, slide: str | None = None, ray: str | None = None,
                 ray_workers: int | None = None):
        if backend is None and model is not None and os.path.isdir(model):
            backend = "torch"  # a transformers model directory: only torch loads one
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend_id is not None:
            if backend_of(backend_id) is None or backend not in (None, backend_of(backend_id)):
                raise ValueError(f"backend_id {backend_id!r} is not one of the {backend or 'known'} backend's ids")
            backend = backend_of(backend_id)
        if slide is None:  # the torch backend's cache cannot shift (TorchModel.shift_lane)
            slide = "restart" if backend == "torch" else "shift"
        if slide not in SLIDES:
            raise ValueError(f"slide must be one of {', '.join(SLIDES)}, got {slide!r}")
        if slide == "shift" and backend == "torch":
            raise ValueError("the torch backend cannot shift its cache: use slide='restart'")
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"level must be an integer in 1..9, got {level!r}")
        self.params = codec_params(level, llm_only=llm_only, window=window, keep=keep, slide=SLIDES[slide],
                                   cdf_bits=cdf_bits, check_every=check_every, lanes=lanes,
                                   lane_tokens=lane_tokens, primer=primer)
        self._auto_checkpoints = check_every is None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 256):
            raise ValueError(f"threads must be an integer in 1..256, got {threads!r}")
        if route not in ROUTES:
            raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
        if device is not None and device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {device!r}")
        if device is not None and backend != "torch":
            raise ValueError("device applies to the torch backend only (backend='torch')")
        self.threads = threads or physical_cores()
        self.route = route
        self._slot = ModelSlot(model, backend=backend, device=device, threads=self.threads, backend_id=backend_id)
        self.last_stats: CodingStats | None = None
        if ray_workers is not None and (isinstance(ray_workers, bool) or not isinstance(ray_workers, int) or ray_workers < 1):
            raise ValueError(f"ray_workers must be a positive integer, got {ray_workers!r}")
        # Ray (distributed.py): every chunk coded by one of the cluster's workers, each a
        # Compressor of these very options, with `threads` CPUs (1 unless given)
        self._ray = ray
        self._ray_workers = ray_workers
        self._ray_options = dict(model=None if model is None else os.fspath(model), level=level, window=window,
                                 keep=keep, cdf_bits=cdf_bits, check_every=check_every, lanes=lanes,
                                 lane_tokens=lane_tokens, primer=primer, llm_only=llm_only, route=route,
                                 backend=backend, backend_id=backend_id, device=device, slide=slide)
        self._ray_threads = threads or 1
        self._cluster = None

    @property
    def model(self):
        """The loaded model (a LanguageModel), or None before the first use."""
        return self._slot.model

    @property
    def models_loaded(self) -> int:
        """How many times a model was loaded (it is reloaded only for another backend's archive)."""
        return self._slot.loaded

    def model_file(self) -> ModelFile:
        return self._slot.model_file()

    def cluster(self):
        """The Ray cluster this compressor codes on (distributed.Cluster), or None without ray."""
        if self._ray is not None and self._cluster is None:
            from .distributed import Cluster

            self._cluster = Cluster(self._ray, self._ray_options, workers=self._ray_workers, threads=self._ray_threads)
        return self._cluster

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._slot.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def compress(self, data: bytes, *, progress: Progress | None = None, measure_ideal: bool = False) -> bytes:
        """Return the archive of `data`; `progress(bytes, tokens)` reports work as it is done."""
        builder = self.archive_builder(progress=progress, measure_ideal=measure_ideal)
        builder.add_stream(io.BytesIO(bytes(data)).read)
        return container.write_archive(builder.finish())

    def archive_builder(self, *, progress: Progress | None = None, measure_ideal: bool = False) -> ArchiveBuilder:
        """An ArchiveBuilder: feed it segments as they arrive (nczip.open() and the CLI do);
        its stats become last_stats."""
        self.last_stats = CodingStats(measure_ideal=measure_ideal)
        return ArchiveBuilder(self.chunk_encoder(), progress, self.last_stats, cluster=self.cluster())

    def chunk_encoder(self) -> pipeline.ChunkEncoder:
        """What codes one chunk with this compressor's model and settings (distributed.py's
        workers hold one each)."""
        return pipeline.ChunkEncoder(self._slot, self.params, self._auto_checkpoints, self.route)

    def decompress(self, data: bytes, *, progress: Progress | None = None) -> bytes:
        """Return the original bytes; raises an NczipError if anything fails to check out.

        The whole archive (header, table, every payload's CRC-32) and the model are checked
        before any model time is spent, and nothing is returned unless the output matches the
        recorded size and SHA-256."""
        return b"".join(self.iter_decompress(data, progress=progress))

    def iter_decompress(self, data: bytes, *, progress: Progress | None = None) -> Iterator[bytes]:
        """The original bytes one segment at a time (at most 1 MiB each), for callers that write
        them as they come. Everything is checked first, as in decompress; the size and SHA-256
        of the whole are checked before the last segment is handed out."""
        data = bytes(data)
        header, _ = container.read_header(data)
        check_header(header)
        archive = container.read_archive(data)
        segments = archive.segments
        cluster = self.cluster()
        if cluster is not None:
            def check_model() -> None:  # on the coordinator, without loading the model
                if any(s.method == Method.LLM for s in segments):
                    self._slot.check(header.backend, header.model_sha256, header.model_name)

            yield from cluster.decode_segments(header, segments, progress, check_model)
            return
        yield from pipeline.decode_segments(
            self._slot, header, [s.method for s in segments],
            ((s.method, s.original_size, s.token_count, s.payload) for s in segments), progress,
        )

    def check_model(self, header: Header, params: CodecParams, methods: Sequence[Method]) -> None:
        """ModelMismatchError unless this compressor's model can decode the archive's LLM segments."""
        pipeline.check_model(self._slot, header, params, methods)

    def decode_segments(self, header: Header, methods: Sequence[Method], payloads, progress: Progress | None = None):
        """pipeline.decode_segments with this compressor's model (nczip.open() reads through it)."""
        return pipeline.decode_segments(self._slot, header, methods, payloads, progress)


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
