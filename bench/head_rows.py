"""Time nczip's own output head alone, per call and per row, for 1 to 64 rows of hidden states.

    python bench/head_rows.py [--threads 2] [--model FILE.gguf]

Gemma-3's output matrix (262,144 x 640, Q8_0) packed as nczip packs it, random hidden states;
each row count is called once to warm up, then timed over 5 calls. One row is bound by reading
the 168 MB matrix; many rows by the int8 dot products. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nczip.models.head import Q8Head  # noqa: E402
from nczip.models.registry import default_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    path = args.model or default_model().path
    head = Q8Head.from_gguf(path, threads=args.threads)
    if head is None:
        sys.exit(f"head_rows.py: {path} has no Q8_0 output matrix that nczip's head computes")
    rng = np.random.default_rng(0)
    for rows in (1, 4, 8, 12, 16, 24, 32, 48, 64):
        hidden = rng.standard_normal((rows, head.n_embd)).astype(np.float32)
        head(hidden)
        calls = 5
        started = time.perf_counter()
        for _ in range(calls):
            head(hidden)
        seconds = (time.perf_counter() - started) / calls
        print(f"rows {rows:3d}: {seconds * 1e3:7.1f} ms per call, {seconds * 1e3 / rows:6.2f} ms per row", flush=True)
    head.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
