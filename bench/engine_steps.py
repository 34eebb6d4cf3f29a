"""Where the engine's time goes per token: the model body and the output head, timed apart, for a
decoder step (one row per lane) and for the encoder's prefill blocks, at each kernel level.

    python bench/engine_steps.py [--lanes 16] [--context 1000] [--threads 2] [--kernels avx512,avx2]

Every lane is first filled with --context tokens of alice29.txt (prefill), then timed: decoder
steps of one row per lane (body, then head), and prefill blocks of 128 rows (body; head at 64
rows, as codec.py calls it). Medians of 9 calls after one to warm up. What this leaves out of a
token's time, the integer CDF and the range coder, is the remainder against bench/levels.py's
speeds. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import locate  # noqa: E402
from engine import cpu_description  # noqa: E402  (bench/engine.py)
from nczip import tokens as tokenizer  # noqa: E402
from nczip.models.engine import KERNELS, EngineModel  # noqa: E402
from nczip.models.registry import default_model  # noqa: E402

PREFILL_ROWS = 128
HEAD_ROWS = 64
CALLS = 9


def median_ms(call) -> float:
    call()
    times = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def measure(model: EngineModel, text: list[int], lanes: int, context: int) -> dict[str, float]:
    model.reset()
    for lane in range(lanes):  # fill every lane to `context` tokens, in prefill blocks
        ids = text[lane * context: (lane + 1) * context]
        for start in range(0, context, PREFILL_ROWS):
            block = ids[start: start + PREFILL_ROWS]
            model.hidden_rows(block, range(start, start + len(block)), [lane] * len(block))
    # Timed calls append their rows to the lanes (a few hundred positions past `context`).
    length = [context] * lanes
    rng_tokens = text[lanes * context:]

    def append(lane_ids: list[int], count: int = 1):
        tokens, positions, lane_list = [], [], []
        for lane in lane_ids:
            for _ in range(count):
                tokens.append(rng_tokens[length[lane] % len(rng_tokens)])
                positions.append(length[lane])
                lane_list.append(lane)
                length[lane] += 1
        return model.hidden_rows(tokens, positions, lane_list)

    hidden = append(range(lanes)).copy()
    wide = hidden[[i % lanes for i in range(HEAD_ROWS)]]
    return {
        "step body ms": median_ms(lambda: append(range(lanes))),
        "step head ms": median_ms(lambda: model.head(hidden)),
        "prefill body ms/row": median_ms(lambda: append([0], PREFILL_ROWS)) / PREFILL_ROWS,
        "prefill head ms/row": median_ms(lambda: model.head(wide)) / HEAD_ROWS,
        "one-row body ms": median_ms(lambda: append([1])),
        "one-row head ms": median_ms(lambda: model.head(hidden[:1])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, default=16)
    parser.add_argument("--context", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", default="avx512,avx2", help=f"comma-separated, of {', '.join(KERNELS)}")
    args = parser.parse_args()
    source = locate.find("alice29.txt")
    if source is None:
        raise SystemExit("alice29.txt not found (set NCZIP_CORPORA)")
    model = EngineModel(default_model(), n_ctx=args.context + (CALLS + 2) * (PREFILL_ROWS + 2), threads=args.threads,
                        n_lanes=args.lanes)
    text = tokenizer.tokenize_exact(source.read_bytes(), model)
    if len(text) < args.lanes * args.context + args.lanes:
        raise SystemExit("alice29.txt is too short for these --lanes and --context")
    print(f"{cpu_description()}; {args.threads} threads; {args.lanes} lanes at {args.context} tokens of context")
    rows = []
    for name in args.kernels.split(","):
        model.kernel = KERNELS[name]
        if model.kernel != KERNELS[name]:
            print(f"{name}: this CPU does not run it (fell back to level {model.kernel})")
            continue
        rows.append((name, measure(model, text, args.lanes, args.context)))
    if rows:
        keys = list(rows[0][1])
        print("| kernel | " + " | ".join(keys) + " |")
        print("|---|" + "---:|" * len(keys))
        for name, values in rows:
            print(f"| {name} | " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |")
    model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
