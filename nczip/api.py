"""compress / decompress bytes: the facade the CLI, scripts and nczip.open() call.

bytes -> segments -> tokens -> coder -> container, and back (pipeline.py). A Compressor holds its
settings and the loaded model, so that many inputs do not reload it.
"""
from __future__ import annotations

import io
from typing import Iterator, Sequence

from . import container, pipeline
from .container import Header, Method
from .models.backends import BACKENDS, ModelSlot  # noqa: F401 (the CLI's choices)
from .models.registry import ModelFile
from .options import ROUTES, check_options, physical_cores  # noqa: F401 (the API's names)
from .params import CODEC_PRESETS, DEFAULT_LEVEL, SLIDES, CodecParams, CodingStats, codec_params  # noqa: F401
from .pipeline import ArchiveBuilder, Progress, check_header, verify_output  # noqa: F401 (the API's names)


class Compressor:
    """Compresses and decompresses with one loaded model, loaded on first use.

    Options have the CLI's names and defaults (options.py checks them): ``model`` (a GGUF path,
    or a transformers model directory for torch; None: the default Gemma-3-270M), ``threads``
    (None: physical cores), ``level`` (1 fastest .. 9 smallest, default 6: a preset of the
    settings below, each of which may also be given: ``window`` and ``keep`` context tokens,
    ``lanes`` coded in lockstep, ``lane_tokens`` the fewest per lane, ``primer`` tokens coded on
    one lane first, ``cdf_bits``, ``check_every`` steps between drift checkpoints, None: only for
    backends whose floats depend on the machine), ``llm_only`` (leave out the n-gram, match and
    bias models beside the LLM), ``route`` ("auto": text to the LLM, binary to zstd or lzma,
    never worse than those; "llm": every byte to the LLM), ``backend`` ("engine", nczip's own,
    the default for Gemma-3 GGUFs; "llama": llama.cpp; "torch": PyTorch and transformers;
    decoding uses the archive's own), ``backend_id`` (compress with this arithmetic of the
    backend), ``device`` (torch's "cpu" or "cuda"; None: cuda if present), ``slide`` ("shift"
    drops a full window's oldest tokens from the cache; "restart" evaluates BOS + the last
    ``keep`` again, the torch backend's only way), ``ray`` (code on a Ray cluster: "local",
    "auto" or an address; distributed.py) and ``ray_workers`` (None: the cluster's CPUs).

    >>> from nczip import Compressor
    >>> with Compressor() as c:
    ...     archive = c.compress(b"Hello, world!\\n")
    ...     c.decompress(archive)
    b'Hello, world!\\n'
    """

    def __init__(self, **options):
        self.options = o = check_options(**options)
        self.params = o.codec_params()
        self._auto_checkpoints = o.check_every is None
        self.threads = o.threads or physical_cores()
        self.route = o.route
        self._slot = ModelSlot(o.model, backend=o.backend, device=o.device, threads=self.threads,
                               backend_id=o.backend_id)
        self.last_stats: CodingStats | None = None
        self._cluster = None

    @property
    def model(self):
        """The loaded model (a LanguageModel), or None before the first use."""
        return self._slot.model

    @property
    def models_loaded(self) -> int:
        """How many times a model was loaded (it is reloaded only for another backend's archive)."""
        return self._slot.loaded

    @property
    def model_slot(self) -> ModelSlot:
        """Where the model is loaded and checked (models/backends.py)."""
        return self._slot

    def model_file(self) -> ModelFile:
        return self._slot.model_file()

    def cluster(self):
        """The Ray cluster this compressor codes on (distributed.Cluster), or None without ray."""
        o = self.options
        if o.ray is not None and self._cluster is None:
            from .distributed import Cluster

            self._cluster = Cluster(o.ray, o.for_worker(), workers=o.ray_workers)
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
