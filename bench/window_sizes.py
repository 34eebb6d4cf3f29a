"""Window size against bpb and speed, to choose the default context window from data.

    python bench/window_sizes.py [--file ../shared/corpora/alice29.txt] [--windows 1024,2048,4096,8192]

bpb: the ideal code length (-sum log2 p) of the file under nczip's sliding-window schedule
(BOS + the last `keep` tokens after each slide), computed with batched evaluation so that a
whole book takes minutes rather than the hour single-token decoding would. Batched floats differ
slightly from the coder's single-token floats; the bpb they give agrees to about 0.1%.

speed: the coder's own path (one token per llama_decode) timed at a realistic fill of the
window, plus the cost of the prefill at each slide, amortized over the tokens between slides.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nczip import tokens  # noqa: E402
from nczip.api import physical_cores  # noqa: E402
from nczip.models.llama_cpp import LlamaCppModel  # noqa: E402
from nczip.models.registry import resolve_model  # noqa: E402

LN2 = math.log(2)


def ideal_bits(model: LlamaCppModel, ids: list[int], window: int, keep: int, chunk: int = 256) -> float:
    """Code length of `ids` under SlidingWindow(window, keep), evaluated in batches."""
    lib = model._lib
    batch = lib.llama_batch_init(chunk, 0, 1)
    total = 0.0
    i = 0
    context: list[int] = []
    try:
        while i < len(ids):
            # The window holds BOS + context; it is fed until full, predicting one token per row
            # from the last context row on, exactly as the coder's SlidingWindow does.
            fed = min(window - 1 - len(context), len(ids) - i)
            sequence = [model.bos, *context, *ids[i : i + fed]]
            first_row = len(context)  # row whose logits predict ids[i]
            targets = ids[i : i + fed + 1]
            model.reset()
            for start in range(0, len(sequence), chunk):
                part = sequence[start : start + chunk]
                for j, token in enumerate(part):
                    batch.token[j] = token
                    batch.pos[j] = start + j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    row = start + j
                    batch.logits[j] = 1 if first_row <= row < first_row + len(targets) else 0
                batch.n_tokens = len(part)
                if lib.llama_decode(model._ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
                for j in range(len(part)):
                    row = start + j
                    if first_row <= row < first_row + len(targets):
                        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(model._ctx, j), shape=(model.n_vocab,))
                        x = logits.astype(np.float64)
                        m = x.max()
                        lse = m + math.log(np.exp(x - m).sum())
                        total += (lse - x[targets[row - first_row]]) / LN2
            i += len(targets)
            context = ids[max(0, i - keep) : i]
    finally:
        lib.llama_batch_free(batch)
    return total


def decode_speed(model: LlamaCppModel, ids: list[int], window: int, keep: int, steps: int = 48) -> tuple[float, float]:
    """(single-token decodes per second at 3/4 fill, seconds for one slide's prefill)."""
    fill = max(1, (keep + window) // 2 - steps)
    model.reset()
    t0 = time.perf_counter()
    model.evaluate([model.bos, *ids[: keep]], 0)
    prefill_seconds = time.perf_counter() - t0
    model.reset()
    model.evaluate([model.bos, *ids[:fill]], 0)
    t0 = time.perf_counter()
    for k in range(steps):
        model.evaluate([ids[fill + k]], 1 + fill + k)
    return steps / (time.perf_counter() - t0), prefill_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=str(Path(__file__).resolve().parents[2] / "shared/corpora/alice29.txt"))
    parser.add_argument("--limit", type=int, default=0, help="use only the first N bytes")
    parser.add_argument("--windows", default="512,1024,2048,4096,8192")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--no-speed", action="store_true", help="skip the speed columns")
    parser.add_argument("--no-bpb", action="store_true", help="skip the bpb column (speed only: seconds)")
    args = parser.parse_args()

    data = Path(args.file).read_bytes()
    if args.limit:
        data = data[: args.limit]
    windows = [int(w) for w in args.windows.split(",")]
    model = LlamaCppModel(resolve_model(None), n_ctx=max(windows), threads=args.threads)
    ids = tokens.tokenize_exact(data, model)
    print(f"# {Path(args.file).name}: {len(data)} bytes, {len(ids)} tokens, {args.threads} threads")
    print("| window | keep | ideal bpb | decode tok/s | slide prefill s | effective tok/s | effective KB/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for window in windows:
        keep = window // 2
        t0 = time.perf_counter()
        bits = float("nan") if args.no_bpb else ideal_bits(model, ids, window, keep)
        bench_seconds = time.perf_counter() - t0
        if args.no_speed:
            speed_cells = "- | - | - | -"
        else:
            rate, prefill = decode_speed(model, ids, window, keep)
            between = window - 1 - keep  # tokens decoded between two slides
            effective = between / (between / rate + prefill)
            kbps = effective * len(data) / len(ids) / 1024
            speed_cells = f"{rate:.1f} | {prefill:.2f} | {effective:.1f} | {kbps:.3f}"
        print(f"| {window} | {keep} | {bits / len(data):.4f} | {speed_cells} |  <!-- {bench_seconds:.0f}s -->", flush=True)


if __name__ == "__main__":
    main()
