"""Every compression level (nczip -1 .. -9) on one file: archive size, bpb, KB/s each way and
peak RSS, each level compressing and decompressing in its own process, every round trip checked.

    python bench/levels.py [FILE] [--limit BYTES] [--levels 1,2,...,9] [--json OUT]

Default: alice29.txt from the corpus, all nine levels. Prints a Markdown table headed by the
CPU's model and SIMD features (bench/engine.py's); KB = 1024 bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import locate  # noqa: E402
from engine import print_rows, timed  # noqa: E402  (bench/engine.py)


def run(level: int, source: Path, size: int, work: Path) -> dict:
    nczip = [sys.executable, "-m", "nczip"]
    archive, output = work / f"{level}.ncz", work / f"{level}.out"
    with open(source, "rb") as src, open(archive, "wb") as dst:
        c_sec, c_rss = timed([*nczip, "-c", f"-{level}"], dict(os.environ), src, dst)
    with open(archive, "rb") as src, open(output, "wb") as dst:
        d_sec, d_rss = timed([*nczip, "-d", "-c"], dict(os.environ), src, dst)
    compressed = archive.stat().st_size
    return {
        "level": level, "bytes": compressed, "bpb": round(compressed * 8 / size, 4),
        "compress s": round(c_sec, 1), "compress KB/s": round(size / 1024 / c_sec, 3),
        "decompress s": round(d_sec, 1), "decompress KB/s": round(size / 1024 / d_sec, 3),
        "peak RSS MB": max(c_rss, d_rss),
        "round trip": "exact" if output.read_bytes() == source.read_bytes() else "DIFFERS",
        "archive sha256": hashlib.sha256(archive.read_bytes()).hexdigest()[:16],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="default: alice29.txt from the corpus")
    parser.add_argument("--limit", type=int, default=None, help="bytes from the start of the file")
    parser.add_argument("--levels", default="1,2,3,4,5,6,7,8,9", help="comma-separated levels")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if not all(1 <= level <= 9 for level in levels):
        parser.error("levels are 1..9")
    path = Path(args.file) if args.file else locate.find("alice29.txt")
    data = path.read_bytes()[: args.limit] if args.limit else path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "input"
        source.write_bytes(data)
        rows = [run(level, source, len(data), work) for level in levels]
    print_rows(path, data, args.limit, rows, args.json)
    return 0 if all(row["round trip"] == "exact" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
