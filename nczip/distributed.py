"""Compress and decompress across a Ray cluster (pip install 'nczip[ray]'; nczip --ray).

An archive is a sequence of chunks coded independently of each other (segment.py cuts the input
every 1 MiB, and each chunk's segments have their own coder and model state), so the chunks
spread over a cluster. The coordinator, the process that runs nczip, cuts the input exactly as a
local run does and hands each chunk to a SegmentWorker, a Ray actor that loads the model once and
codes chunk after chunk with pipeline.ChunkEncoder, the same code a local run uses. The coded
chunks come back in any order and go into the same ArchiveBuilder in input order: the archive is
byte for byte the local run's, and with nczip's engine (whose floats are the same on every
machine) that holds across unlike machines. llama.cpp's and torch's floats depend on the machine,
so with those backends the coordinator refuses workers of different machine classes.

Faults: an actor that dies is restarted by Ray and its task retried (max_restarts,
max_task_retries), so a lost worker costs a retry of its chunk, not the run; a result that fails
its check (sizes, a CRC-32 computed by the worker) is coded again, never used. Decompression sends
each segment's payload to a worker and checks the decoded size, then the whole output's size and
SHA-256, as a local run does.
"""
from __future__ import annotations

import hashlib
import os
import platform
import zlib
from collections import deque
from typing import Callable, Iterator, Sequence

from . import segment
from .container import Header, Method, Segment
from .errors import ChecksumError, NczipError
from .models.backends import ENGINE, backend_of, default_backend
from .pipeline import ArchiveBuilder, CodedChunk, Progress, check_header, verify_output

# Chunks in flight per worker: one coding, one waiting, so that no worker idles between two.
IN_FLIGHT = 2
# How often a chunk whose result failed its check is coded again before the run fails.
RESULT_RETRIES = 2
# Ray's own retries of a task whose actor died (the actor restarts without limit).
TASK_RETRIES = 3


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise NczipError(f"Ray is not installed ({exc}): pip install 'nczip[ray]'") from None
    return ray


def machine_class(backend: str) -> str:
    """What a backend's floats depend on: nothing for nczip's engine; for llama.cpp and torch the
    CPU's features and the library's version (and for torch the device)."""
    if backend == ENGINE:
        return "portable"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    library = "?"
    try:
        from importlib.metadata import version

        library = version("llama-cpp-python" if backend == "llama" else "torch")
    except Exception:  # not installed: the worker fails when it loads the model anyway
        pass
    digest = hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]
    return f"{backend} {library} on {platform.machine()} cpu-flags {digest}"


def refuse_mixed(classes: Sequence[str], backend: str) -> None:
    """NczipError when workers of these machine classes would compute the backend's floats differently."""
    if len(set(classes)) > 1:
        raise NczipError(
            f"the {backend} backend computes other floats on different machines, and these workers differ: "
            f"{'; '.join(sorted(set(classes)))}. Use workers of one kind, or nczip's engine (--backend engine), "
            "whose archives are the same everywhere"
        )


class SegmentWorker:
    """A Ray actor: one Compressor, its model loaded on the first chunk, coding chunk after chunk."""

    def __init__(self, options: dict):
        from .api import Compressor

        self._compressor = Compressor(**options)
        self._encoder = self._compressor.chunk_encoder()

    def machine(self, backend: str) -> str:
        return machine_class(backend)

    def pid(self) -> int:
        return os.getpid()

    def encode(self, index: int, chunk: bytes) -> tuple[int, CodedChunk, list[int]]:
        """(index, the chunk's coding, each segment payload's CRC-32 as computed here)."""
        coded = self._encoder.encode(chunk)
        return index, coded, [zlib.crc32(s.payload) for s in coded.segments]

    def decode(self, index: int, count: int, header: Header, method: int, original_size: int, token_count: int,
               payload: bytes) -> tuple[int, bytes, bytes]:
        """(index, the segment's bytes, their SHA-256 as computed here)."""
        from . import pipeline

        params = check_header(header)
        part = pipeline.decode_segment(self._compressor.model_slot, header, params, index, count, Method(method),
                                       original_size, token_count, payload)
        return index, part, hashlib.sha256(part).digest()


class Cluster:
    """The coordinator's side: a Ray connection and a pool of SegmentWorkers.

    address: "local" starts a Ray instance on this machine (ray.init()); "auto" joins the cluster
    Ray finds, as ray.init("auto") does; anything else is a cluster address (ray://host:port or
    host:port). options: a Compressor's, as each worker takes them (Options.for_worker); workers:
    how many actors (None: the cluster's CPUs divided by the threads per worker); each asks Ray
    for its threads' CPUs."""

    def __init__(self, address: str, options: dict, *, workers: int | None = None):
        self.ray = ray = _import_ray()
        if not ray.is_initialized():
            if address == "local":
                ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            else:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        threads = options["threads"]
        count = workers if workers is not None else max(1, cpus // threads)
        remote = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=TASK_RETRIES)(SegmentWorker)
        self.options = options
        self.actors = [remote.remote(self.options) for _ in range(count)]
        self._backend: str | None = None

    def check_machines(self, backend: str) -> None:
        """Every worker computes the backend's floats alike, or NczipError saying which differ."""
        if self._backend == backend:
            return
        refuse_mixed(self.ray.get([actor.machine.remote(backend) for actor in self.actors]), backend)
        self._backend = backend

    # -- compress -----------------------------------------------------------------------------
    def encode_stream(self, builder: ArchiveBuilder, read: Callable[[int], bytes], progress=None) -> int:
        """Every chunk of what read(n) returns, coded by the workers and added to `builder` in
        input order; returns the bytes read. At most IN_FLIGHT chunks per worker are held."""
        self.check_machines(builder.encoder.slot.backend or default_backend(builder.encoder.slot.model_file()))
        ray = self.ray
        chunks = segment.split_stream(read)
        pending: dict = {}  # object ref -> (index, actor)
        held: dict[int, bytes] = {}  # index -> chunk, until it is added
        results: dict[int, CodedChunk] = {}
        tries: dict[int, int] = {}
        idle = deque(self.actors * IN_FLIGHT)
        next_in, next_out, total, exhausted = 0, 0, 0, False
        while True:
            while idle and not exhausted:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                actor = idle.popleft()
                held[next_in] = chunk
                pending[actor.encode.remote(next_in, chunk)] = (next_in, actor)
                next_in += 1
            while next_out in results:
                coded, chunk = results.pop(next_out), held.pop(next_out)
                builder.add_coded(chunk, coded)
                total += len(chunk)
                if progress is not None:
                    progress(len(chunk), coded.tokens)
                next_out += 1
            if not pending:
                return total
            done, _ = ray.wait(list(pending), num_returns=1)
            index, actor = pending.pop(done[0])
            idle.append(actor)
            _, coded, crcs = ray.get(done[0])
            if _encoded_well(held[index], coded, crcs):
                results[index] = coded
                continue
            tries[index] = tries.get(index, 0) + 1
            if tries[index] > RESULT_RETRIES:
                raise NczipError(f"chunk {index + 1} came back from its worker damaged {tries[index]} times")
            worker = idle.popleft()
            pending[worker.encode.remote(index, held[index])] = (index, worker)

    # -- decompress ---------------------------------------------------------------------------
    def decode_segments(self, header: Header, segments: Sequence[Segment], progress: Progress | None = None,
                        check_model: Callable[[], None] | None = None) -> Iterator[bytes]:
        """The original bytes one segment at a time, in order, each segment decoded by a worker;
        the whole output's size and SHA-256 are checked before the last segment is handed out."""
        check_header(header)
        if check_model is not None:
            check_model()
        backend = backend_of(header.backend) if header.backend else None
        if backend is not None and any(s.method == Method.LLM for s in segments):
            self.check_machines(backend)
        ray = self.ray
        count = len(segments)
        pending: dict = {}
        parts: dict[int, bytes] = {}
        tries: dict[int, int] = {}
        idle = deque(self.actors * IN_FLIGHT)
        next_in = next_out = size = 0
        digest = hashlib.sha256()

        def submit(index: int, actor) -> None:
            s = segments[index]
            ref = actor.decode.remote(index, count, header, int(s.method), s.original_size, s.token_count, s.payload)
            pending[ref] = (index, actor)

        while next_out < count:
            while idle and next_in < count:
                submit(next_in, idle.popleft())
                next_in += 1
            while next_out in parts:
                part = parts.pop(next_out)
                digest.update(part)
                size += len(part)
                if progress is not None:
                    progress(len(part), 0)
                if next_out == count - 1:
                    verify_output(header, size, digest.digest())
                next_out += 1
                yield part
            if next_out == count:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            index, actor = pending.pop(done[0])
            idle.append(actor)
            try:
                _, part, sha = ray.get(done[0])
            except self.ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, NczipError):
                    raise cause from None  # the archive's fault (damage, the wrong model): no retry helps
                raise
            if len(part) == segments[index].original_size and hashlib.sha256(part).digest() == sha:
                parts[index] = part
                continue
            tries[index] = tries.get(index, 0) + 1
            if tries[index] > RESULT_RETRIES:
                raise ChecksumError(f"segment {index + 1} of {count} came back from its worker damaged {tries[index]} times")
            submit(index, idle.popleft())
        if count == 0:
            verify_output(header, 0, digest.digest())

    def worker_pids(self) -> list[int]:
        return self.ray.get([actor.pid.remote() for actor in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def _encoded_well(chunk: bytes, coded: CodedChunk, crcs: list[int]) -> bool:
    """A coded chunk that covers its chunk exactly and arrived as the worker sent it."""
    try:
        return (sum(s.original_size for s in coded.segments) == len(chunk) and len(crcs) == len(coded.segments)
                and all(zlib.crc32(s.payload) == crc for s, crc in zip(coded.segments, crcs)))
    except (AttributeError, TypeError):
        return False


__all__ = ["Cluster", "SegmentWorker", "machine_class", "refuse_mixed"]
