"""Lockstep lanes against bits per byte and speed: the data behind the default lane settings.

    python bench/lanes.py [--file ../shared/corpora/alice29.txt] [--limit BYTES] [--lanes 1,4,8,16]
                          [--lane-tokens 1] [--no-decompress]

For each lane count N, compresses the file (or its first --limit bytes) with at most N lanes
(lane_tokens 1 by default, so exactly N lanes), then decompresses and compares. Prints archive
bpb, the ideal bpb of the same floats, and the wall-clock speed of each direction. Run it on an
otherwise idle machine: llama.cpp's threads spin, and any other load distorts the timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora.locate import find  # noqa: E402
from nczip.api import Compressor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--lanes", default="1,4,8,16")
    parser.add_argument("--lane-tokens", type=int, default=1)
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--no-decompress", action="store_true")
    args = parser.parse_args()
    path = args.file or find("alice29.txt")
    data = path.read_bytes()[: args.limit]
    print(f"# {path.name}, {len(data)} bytes; window {args.window}, lane_tokens {args.lane_tokens}")
    print("| lanes | tokens/lane | archive B | bpb | ideal bpb | compress KB/s | decompress KB/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(x) for x in args.lanes.split(",")]:
        with Compressor(lanes=n, lane_tokens=args.lane_tokens, window=args.window) as c:
            c.compress(b"warm up")  # loads the model outside the timing
            t0 = time.perf_counter()
            archive = c.compress(data, measure_ideal=True)
            t_c = time.perf_counter() - t0
            stats = c.last_stats
            t_d = float("nan")
            if not args.no_decompress:
                t0 = time.perf_counter()
                if c.decompress(archive) != data:
                    raise SystemExit(f"lanes={n}: round trip FAILED")
                t_d = time.perf_counter() - t0
        per_lane = stats.tokens / min(n, max(1, stats.tokens // args.lane_tokens))
        print(
            f"| {n} | {per_lane:.0f} | {len(archive)} | {8 * len(archive) / len(data):.4f} | "
            f"{stats.ideal_bits / len(data):.4f} | {len(data) / 1000 / t_c:.3f} | {len(data) / 1000 / t_d:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
