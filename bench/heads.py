"""nczip's own output head against llama.cpp's: archive size, bpb and speed each way.

    python bench/heads.py [--limit 40000] [--threads 2] [FILE]

Compresses and decompresses the first --limit bytes of FILE (default: alice29.txt from the
corpus) in-process, once with backend id llama.cpp-fa2-h8-sw (our head, the default for
Gemma-3) and once with llama.cpp-fa2-sw (llama.cpp's head), and checks both round trips. Run it
on an idle machine: llama.cpp's threads spin, so a second busy process distorts the timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import locate  # noqa: E402
from nczip import container  # noqa: E402
from nczip.api import Compressor  # noqa: E402

IDS = ("llama.cpp-fa2-h8-sw", "llama.cpp-fa2-sw")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?")
    parser.add_argument("--limit", type=int, default=40_000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = Path(args.file) if args.file else locate.find("alice29.txt")
    if path is None:
        parser.error("alice29.txt not found: name a file")
    data = path.read_bytes()[: args.limit]
    print(f"{path.name}, first {len(data)} bytes, {args.threads} threads")
    print("| head (backend id) | bytes | bpb | compress KB/s | decompress KB/s |")
    print("|---|---:|---:|---:|---:|")
    for backend_id in IDS:
        with Compressor(threads=args.threads, backend_id=backend_id) as c:  # what new archives record
            started = time.perf_counter()
            archive = c.compress(data)
            packed = time.perf_counter()
            same = c.decompress(archive) == data
            done = time.perf_counter()
        if container.read_header(archive)[0].backend != backend_id or not same:
            print(f"{backend_id}: FAILED (round trip {'ok' if same else 'wrong'})")
            return 1
        print(f"| {backend_id} | {len(archive):,} | {len(archive) * 8 / len(data):.4f} | "
              f"{len(data) / 1024 / (packed - started):.3f} | {len(data) / 1024 / (done - packed):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
