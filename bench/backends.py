"""llama.cpp against the torch backend on the same model and text: archive size, bpb, ideal code
length, speed, and (with --decompress) an exact round trip through each.

    python bench/backends.py [FILE] [--limit 20000] [--torch-device cpu|cuda] [--lanes N] [--decompress]

Default: the first 20,000 bytes of alice29.txt (corpora/ finds it), every byte through the model
(--route llm), default coding settings otherwise. Prints a Markdown table.
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


def measure(name: str, data: bytes, decompress: bool, **options) -> dict:
    with Compressor(route="llm", **options) as compressor:
        started = time.perf_counter()
        compressor.compress(b"warm up: load the model\n")
        load = time.perf_counter() - started
        started = time.perf_counter()
        archive = compressor.compress(data, measure_ideal=True)
        seconds = time.perf_counter() - started
        stats = compressor.last_stats
        payload = sum(len(s.payload) for s in container.read_archive(archive).segments)
        row = {
            "backend": name,
            "bytes": len(archive),
            "bpb": len(archive) * 8 / len(data),
            "payload bpb": payload * 8 / len(data),
            "ideal bpb": stats.ideal_bits / len(data),
            "tokens": stats.tokens,
            "load s": load,
            "compress s": seconds,
            "tok/s": stats.tokens / seconds,
            "KB/s": len(data) / 1000 / seconds,
            "id": container.read_header(archive)[0].backend,
        }
        if decompress:
            started = time.perf_counter()
            ok = compressor.decompress(archive) == data
            row["decompress s"] = time.perf_counter() - started
            row["round trip"] = "exact" if ok else "DIFFERS"
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="default: alice29.txt from the corpus")
    parser.add_argument("--limit", type=int, default=20_000, help="bytes from the start of the file")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lanes", type=int, default=None, help="most lanes (default: nczip's)")
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--decompress", action="store_true", help="decode each archive too and compare")
    parser.add_argument("--only", choices=["llama", "torch"], default=None)
    args = parser.parse_args()
    path = Path(args.file) if args.file else locate.find("alice29.txt")
    if path is None:
        print("alice29.txt not found: pass a file or set NCZIP_CORPORA", file=sys.stderr)
        return 1
    data = path.read_bytes()[: args.limit]
    common = {"threads": args.threads}
    if args.lanes:
        common["lanes"] = args.lanes
    rows = []
    if args.only in (None, "llama"):
        rows.append(measure("llama.cpp", data, args.decompress, backend="llama", **common))
    if args.only in (None, "torch"):
        rows.append(measure("torch", data, args.decompress, backend="torch", device=args.torch_device, **common))
    keys = list(rows[0])
    print(f"{path.name}, first {len(data):,} bytes\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) and k.endswith("bpb") else f"{v:.2f}" if isinstance(v, float) else str(v)
                 for k, v in row.items()]
        print("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        print(f"\ntorch / llama.cpp archive size: {rows[1]['bytes'] / rows[0]['bytes']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
