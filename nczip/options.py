"""A Compressor's options, checked and resolved once (api.py's facade, distributed.py's workers).

The names and defaults are the command line's; invalid values raise ValueError naming the valid
range, unknown names TypeError, as a Python signature would.
"""
from __future__ import annotations

import dataclasses
import os

from .models.backends import BACKENDS, backend_of
from .params import DEFAULT_LEVEL, SLIDES, CodecParams, codec_params

ROUTES = ("auto", "llm")
DEVICES = ("cpu", "cuda")
MAX_THREADS = 256


@dataclasses.dataclass(frozen=True)
class Options:
    model: str | None = None
    threads: int | None = None
    level: int = DEFAULT_LEVEL
    window: int | None = None
    keep: int | None = None
    cdf_bits: int | None = None
    check_every: int | None = None
    lanes: int | None = None
    lane_tokens: int | None = None
    primer: int | None = None
    llm_only: bool = False
    route: str = "auto"
    backend: str | None = None
    backend_id: str | None = None
    device: str | None = None
    slide: str | None = None
    ray: str | None = None
    ray_workers: int | None = None

    def codec_params(self) -> CodecParams:
        return codec_params(self.level, llm_only=self.llm_only, window=self.window, keep=self.keep,
                            slide=SLIDES[self.slide], cdf_bits=self.cdf_bits, check_every=self.check_every,
                            lanes=self.lanes, lane_tokens=self.lane_tokens, primer=self.primer)

    def for_worker(self) -> dict:
        """A Ray worker's options: these, on the worker's own CPUs (1 thread unless given)."""
        values = dataclasses.asdict(self)
        del values["ray"], values["ray_workers"]
        values["threads"] = self.threads or 1
        return values


def check_options(**given) -> Options:
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(Options)})
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    o = Options(**given)
    model = None if o.model is None else os.fspath(o.model)
    backend = o.backend
    if backend is None and model is not None and os.path.isdir(model):
        backend = "torch"  # a transformers model directory: only torch loads one
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if o.backend_id is not None:
        if backend_of(o.backend_id) is None or backend not in (None, backend_of(o.backend_id)):
            raise ValueError(f"backend_id {o.backend_id!r} is not one of the {backend or 'known'} backend's ids")
        backend = backend_of(o.backend_id)
    slide = o.slide
    if slide is None:  # the torch backend's cache cannot shift (TorchModel.shift_lane)
        slide = "restart" if backend == "torch" else "shift"
    if slide not in SLIDES:
        raise ValueError(f"slide must be one of {', '.join(SLIDES)}, got {slide!r}")
    if slide == "shift" and backend == "torch":
        raise ValueError("the torch backend cannot shift its cache: use slide='restart'")
    if isinstance(o.level, bool) or not isinstance(o.level, int):
        raise ValueError(f"level must be an integer in 1..9, got {o.level!r}")
    if o.threads is not None and not _positive_int(o.threads, MAX_THREADS):
        raise ValueError(f"threads must be an integer in 1..{MAX_THREADS}, got {o.threads!r}")
    if o.route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {o.route!r}")
    if o.device is not None and o.device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {o.device!r}")
    if o.device is not None and backend != "torch":
        raise ValueError("device applies to the torch backend only (backend='torch')")
    if o.ray_workers is not None and not _positive_int(o.ray_workers):
        raise ValueError(f"ray_workers must be a positive integer, got {o.ray_workers!r}")
    return dataclasses.replace(o, model=model, backend=backend, slide=slide)


def _positive_int(value, most: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 1
            and (most is None or value <= most))


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
