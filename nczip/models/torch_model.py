"""PyTorch / transformers backend (the optional extra `nczip[torch]`), on CUDA or the CPU.

transformers loads the model, from a GGUF (its GGUF support dequantizes the weights to float32)
or from a local model directory, and its own decoder layers compute everything. What we add is
the KV cache: transformers' caches keep every row of a batch at the same position, while
lockstep lanes sit at different positions (and restart when their window slides). `_LaneCache`
hands each layer the keys and values of the rows' own lanes, and an explicit attention mask
says which of them each query may see; the layers never know.

Determinism: the floats depend on the shapes of the calls, which LockstepLanes makes the same on
both sides, and on the device and its kernels, which the backend id records ("torch-cpu-f32",
"torch-cuda-f32"). On CUDA we ask for deterministic algorithms and no TF32.
"""
from __future__ import annotations

import contextlib
import inspect
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NczipError
from ..params import MAX_LANES, N_BATCH
from .backends import torch_backend_id, torch_device_of
from .llm import ModelIdentity, VocabularyOf
from .registry import ModelFile

DEFAULT_N_BATCH = N_BATCH  # prefill chunk: part of the archive's parameters, as for llama.cpp


def backend_id(device: str, threads: int = 1) -> str:
    """The id an archive records: device type and arithmetic, because both change the floats, and
    on the CPU the thread count: MKL's kernels for some small matrices round differently with
    1 and 2 threads on some CPUs (measured with torch 2.13: 5-7 and 9-11 rows), so decoding uses the same."""
    return torch_backend_id(device, threads)


parse_backend_id = torch_device_of  # (device, CPU threads or None) of a torch backend id; None if not one


def _import_torch():
    # Models are local files: no hub, ever (huggingface_hub reads this when first imported;
    # every from_pretrained call also says local_files_only).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise NczipError(
            f"the torch backend needs PyTorch and transformers ({exc}): pip install 'nczip[torch]'"
        ) from None
    return torch


def resolve_device(device: str | None) -> str:
    """"cuda" when a GPU is there (or asked for), else "cpu"."""
    torch = _import_torch()
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise NczipError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise NczipError("no CUDA GPU is available to PyTorch here (device cuda)")
    return device


def _load_hf_model(source: ModelFile, torch):
    """transformers' causal LM for a GGUF file or a model directory, float32, local files only."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = Path(source.path)
    try:
        # its GGUF loader draws a tqdm bar on stderr whatever the verbosity: keep the CLI's clean
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            model = _from_pretrained(AutoModelForCausalLM, path, torch)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise NczipError(f"transformers cannot load {source.name}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _from_pretrained(auto, path: Path, torch):
    if path.is_dir():
        return auto.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    with _gguf_parsed_once():
        return auto.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32, local_files_only=True)


@contextlib.contextmanager
def _gguf_parsed_once():
    """transformers reads a GGUF twice (once for the config, once for the weights), and gguf's
    reader spends ~17 s each time on Gemma's 262k-token vocabulary: hand it the same reader."""
    import gguf

    original = gguf.GGUFReader
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


class _LaneCache:
    """What a transformers attention layer sees as its cache during one call.

    `update` stores the call's keys and values in their lanes' slots and returns, for each row of
    the batch, its lane's slots (the layer masks the ones that the query must not see)."""

    def __init__(self, owner: "TorchModel", rows, slots, length: dict[str, int]):
        self._owner = owner
        self._rows = rows  # a slice of lanes (a view) or an index tensor (a copy)
        self._slots = slots  # (lanes, slots) per layer kind, as index tensors
        self._length = length  # slots each layer kind reads

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        owner = self._owner
        kind = owner._layer_kind[layer_idx]
        keys, values = owner._keys[layer_idx], owner._values[layer_idx]
        lane_index, slot_index = self._slots[kind]
        # (batch, heads, tokens, dim) -> (batch, tokens, heads, dim), the store's layout
        keys[lane_index, slot_index] = key_states.transpose(1, 2)
        values[lane_index, slot_index] = value_states.transpose(1, 2)
        n = self._length[kind]
        return (
            keys[self._rows, :n].transpose(1, 2),
            values[self._rows, :n].transpose(1, 2),
        )


class TorchModel(VocabularyOf):
    """A causal LM in PyTorch behind the LanguageModel protocol (see llm.py)."""

    def __init__(
        self,
        model: ModelFile,
        *,
        n_ctx: int,
        threads: int,
        device: str | None = None,
        n_batch: int = DEFAULT_N_BATCH,
        n_lanes: int = 1,
    ):
        torch = self._torch = _import_torch()
        self.device_type = resolve_device(device)
        self._device = torch.device(self.device_type)
        if self.device_type != "cpu":
            # cuBLAS needs this before its first call to be deterministic; TF32 would change floats.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
        self._model_file = model
        self.use_threads(threads)
        self.n_batch = n_batch
        self._release_vocab = None
        self.vocab = self._load_vocab(model)
        hf = _load_hf_model(model, torch).to(self._device)
        config = hf.config.get_text_config()
        self._hf = hf
        self._inner = hf.model
        self._layers = list(self._inner.layers)
        self.n_vocab = int(hf.lm_head.out_features)
        if self.vocab.n_vocab > self.n_vocab:
            raise NczipError(
                f"model {model.name}: its tokenizer has {self.vocab.n_vocab} tokens, its output layer {self.n_vocab}"
            )
        self.bos = self.vocab.bos
        if self.bos is None or self.bos < 0:
            raise NczipError(f"model {model.name} has no BOS token; nczip needs one to start each window")
        kinds = list(getattr(config, "layer_types", None) or ["full_attention"] * len(self._layers))
        self._layer_kind = kinds
        self._window = {"sliding_attention": getattr(config, "sliding_window", None) or 0}
        self._kinds = sorted(set(kinds))
        rotary_params = inspect.signature(self._inner.rotary_emb.forward).parameters
        self._rotary_by_kind = "layer_type" in rotary_params
        self._softcap = getattr(config, "final_logit_softcapping", None)
        self._kv_heads = int(config.num_key_value_heads)
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self._shape: tuple[int, int] | None = None
        self._logits = None
        self.configure(n_ctx, n_lanes)

    def use_threads(self, threads: int) -> None:
        """CPU threads from now on; on the CPU they are part of the backend id (see backend_id)."""
        if self.device_type == "cpu":
            self._torch.set_num_threads(threads)
        self.threads = threads
        self.identity = ModelIdentity(
            backend_id(self.device_type, threads), self._model_file.name, self._model_file.sha256
        )

    def _load_vocab(self, model: ModelFile):
        if Path(model.path).is_dir():
            from .hf_vocab import HfVocab

            return HfVocab.from_directory(Path(model.path), model.name)
        from .gguf import GGUFFile
        from .vocab import SpmVocab

        try:
            with GGUFFile(model.path) as g:
                if g.meta.get("tokenizer.ggml.model") == b"llama":  # SentencePiece: nczip reads it itself
                    return SpmVocab(g.meta, model.name)
        except ValueError as exc:
            raise NczipError(f"cannot load model {model.path}: {exc}") from None
        from .llama_cpp import load_vocab_only  # other tokenizers: llama.cpp's (pip install 'nczip[llama]')

        vocab, self._release_vocab = load_vocab_only(model)
        return vocab

    # -- context ----------------------------------------------------------------------------
    def configure(self, n_ctx: int, n_lanes: int) -> None:
        """Empty KV stores for n_lanes lanes of n_ctx positions each (a no-op but a reset when
        the shape is the current one). A sliding-window layer keeps a ring of window + n_batch
        slots: enough for a prefill chunk whose first query still sees a full window."""
        if not 1 <= n_lanes <= min(self.n_batch, MAX_LANES):
            raise ValueError(f"n_lanes must be in 1..{min(self.n_batch, MAX_LANES)}, got {n_lanes}")
        if self._shape == (n_ctx, n_lanes):
            self.reset()
            return
        torch = self._torch
        self._keys = self._values = None  # free the old stores before making the new ones
        self._capacity = {}
        for kind in self._kinds:
            window = self._window.get(kind, 0)
            self._capacity[kind] = n_ctx + 1 if not window else min(n_ctx + 1, window + self.n_batch)
        shape = lambda kind: (n_lanes, self._capacity[kind], self._kv_heads, self._head_dim)  # noqa: E731
        # Zeros, not empty memory: masked slots are multiplied by exact zero weights, and stale
        # values stay finite, so they never turn a sum into NaN.
        self._keys = [torch.zeros(shape(kind), device=self._device) for kind in self._layer_kind]
        self._values = [torch.zeros(shape(kind), device=self._device) for kind in self._layer_kind]
        # position held by each slot, -1 when empty, per layer kind
        self._slot_pos = {kind: torch.full((n_lanes, self._capacity[kind]), -1, dtype=torch.long) for kind in self._kinds}
        self.n_lanes = n_lanes
        self.n_ctx = n_ctx
        self._shape = (n_ctx, n_lanes)

    def reset(self) -> None:
        for table in self._slot_pos.values():
            table.fill_(-1)

    def clear_lane(self, lane: int) -> None:
        for table in self._slot_pos.values():
            table[lane].fill_(-1)

    def shift_lane(self, lane: int, start: int, end: int) -> None:
        # Would need the cached keys re-rotated per layer kind (global and local RoPE bases) and
        # the sliding layers' ring re-slotted; Compressor never asks this backend to shift.
        raise NczipError("the torch backend cannot shift a lane's cache (slide='shift'); use slide='restart'")

    def copy_lane(self, source: int, target: int) -> None:
        for keys, values in zip(self._keys, self._values):
            keys[target].copy_(keys[source])
            values[target].copy_(values[source])
        for table in self._slot_pos.values():
            table[target].copy_(table[source])

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, tokens: Sequence[int], start: int, lane: int = 0) -> np.ndarray:
        if not tokens:
            raise ValueError("evaluate needs at least one token")
        logits = None
        for offset in range(0, len(tokens), self.n_batch):
            chunk = list(tokens[offset : offset + self.n_batch])
            positions = [[start + offset + i for i in range(len(chunk))]]
            final = offset + len(chunk) == len(tokens)
            logits = self._forward([chunk], positions, [lane], want_logits=final)
        return logits[0]

    def evaluate_rows(self, tokens: Sequence[int], positions: Sequence[int], lanes: Sequence[int]) -> np.ndarray:
        rows = len(tokens)
        if not 1 <= rows <= self.n_batch or len(positions) != rows or len(lanes) != rows:
            raise ValueError(f"evaluate_rows needs 1..{self.n_batch} rows of token, position and lane")
        return self._forward([[t] for t in tokens], [[p] for p in positions], list(lanes), want_logits=True)

    def _forward(self, tokens: list[list[int]], positions: list[list[int]], lanes: list[int], want_logits: bool):
        """One call: batch row b appends tokens[b] at positions[b] to lane lanes[b]. Returns the
        float32 logits after each row's last token, (rows, vocab), or None."""
        torch = self._torch
        top = max(p for row in positions for p in row)
        if top >= self.n_ctx or min(p for row in positions for p in row) < 0:
            raise NczipError(f"position {top} is outside the context of {self.n_ctx}")
        if any(not 0 <= lane < self.n_lanes for lane in lanes):
            raise ValueError(f"lanes must be in 0..{self.n_lanes - 1}")
        with torch.inference_mode():
            pos = torch.tensor(positions, dtype=torch.long)  # (batch, tokens), on the CPU
            lane_index = torch.tensor(lanes, dtype=torch.long)[:, None].expand_as(pos)
            slots, lengths, masks = {}, {}, {}
            for kind in self._kinds:
                capacity = self._capacity[kind]
                slot = pos % capacity
                table = self._slot_pos[kind]
                table[lane_index, slot] = pos
                n = min(capacity, top + 1)  # slots at or past top + 1 have never been written
                held = table[lanes, :n][:, None, :]  # (batch, 1, n)
                query = pos[:, :, None]  # (batch, tokens, 1)
                visible = (held >= 0) & (held <= query)
                window = self._window.get(kind, 0)
                if window:
                    visible &= held > query - window
                mask = torch.zeros(visible.shape, dtype=torch.float32)
                mask.masked_fill_(~visible, torch.finfo(torch.float32).min)
                masks[kind] = mask[:, None].to(self._device)  # (batch, 1, tokens, n)
                slots[kind] = (lane_index.to(self._device), slot.to(self._device))
                lengths[kind] = n
            first = lanes[0]
            contiguous = lanes == list(range(first, first + len(lanes)))
            rows = slice(first, first + len(lanes)) if contiguous else torch.tensor(lanes, device=self._device)
            cache = _LaneCache(self, rows, slots, lengths)
            ids = torch.tensor(tokens, dtype=torch.long, device=self._device)
            position_ids = pos.to(self._device)
            hidden = self._inner.embed_tokens(ids)
            if self._rotary_by_kind:
                rotary = {kind: self._inner.rotary_emb(hidden, position_ids, kind) for kind in self._kinds}
            else:
                shared = self._inner.rotary_emb(hidden, position_ids)
                rotary = {kind: shared for kind in self._kinds}
            for layer, kind in zip(self._layers, self._layer_kind):
                hidden = layer(
                    hidden,
                    position_embeddings=rotary[kind],
                    attention_mask=masks[kind],
                    position_ids=position_ids,
                    cache=cache,
                )
                if isinstance(hidden, tuple):  # older layer classes return (hidden, ...)
                    hidden = hidden[0]
            if not want_logits:
                return None
            last = self._inner.norm(hidden[:, -1, :])
            logits = self._hf.lm_head(last)
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            self._logits = logits.float().cpu().contiguous()
            return self._logits.numpy()

    def close(self) -> None:
        self._hf = self._inner = self._layers = None
        self._keys = self._values = None
        if self._release_vocab is not None:
            self._release_vocab()
            self._release_vocab = None
