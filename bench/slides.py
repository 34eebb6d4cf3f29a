"""How a full window slides: restarting (re-evaluating the kept tokens) against shifting the cache.

    python bench/slides.py [--limit 100000] [--window 2048] [--lanes 4] [--decompress] [FILE]

Compresses the first --limit bytes of FILE (default: enwik8.head from the corpus) in-process
with restart at keep = window/2 (nczip's rule before 2026-11-29) and shift at keep = 1/2, 3/4
and 7/8 of the window, and prints archive size, bpb and speed. Few lanes and a short window make
every lane slide many times, as long inputs do at the default settings. Run it on an idle
machine: llama.cpp's threads spin, so a second busy process distorts the timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import locate  # noqa: E402
from nczip.api import Compressor  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--limit", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decompress", action="store_true", help="also decompress each archive and check it")
    args = parser.parse_args()
    path = Path(args.file) if args.file else locate.find("enwik8.head")
    if path is None:
        parser.error("enwik8.head not found: name a file")
    data = path.read_bytes()[: args.limit]
    w = args.window
    runs = [("restart", w // 2), ("shift", w // 2), ("shift", w * 3 // 4), ("shift", w * 7 // 8)]
    print(f"{path.name}, first {len(data)} bytes, window {w}, {args.lanes} lanes, {args.threads} threads")
    print("| slide | keep | bytes | bpb | compress s | compress KB/s |" + (" decompress KB/s |" if args.decompress else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if args.decompress else ""))
    for slide, keep in runs:
        with Compressor(threads=args.threads, window=w, keep=keep, lanes=args.lanes, slide=slide) as c:
            started = time.perf_counter()
            archive = c.compress(data)
            seconds = time.perf_counter() - started
            row = (f"| {slide} | {keep} | {len(archive):,} | {len(archive) * 8 / len(data):.4f} | {seconds:.1f} | "
                   f"{len(data) / 1024 / seconds:.3f} |")
            if args.decompress:
                started = time.perf_counter()
                if c.decompress(archive) != data:
                    print(f"{row} ROUND TRIP FAILED")
                    return 1
                row += f" {len(data) / 1024 / (time.perf_counter() - started):.3f} |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
