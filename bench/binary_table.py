"""Issue 5's table: every corpus file (or the files named) through nczip, zstd -19 and xz -9.

    python bench/binary_table.py [--limit BYTES] [FILES...]

Sizes in bytes, times in seconds (wall clock, whole processes given the file's name, compress
only, the median of 3 runs where no model runs), and nczip's margin over min(zstd -19, xz -9). nczip's row is a round
trip: the archive is decoded and compared. Run it on an idle machine (the LLM's threads spin).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from corpora import locate  # noqa: E402

FILES = ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "html", "urls.10K", "enwik8.head",
         "fireworks.jpeg", "paper-100k.pdf", "geo.protodata", "kppkn.gtb"]
NCZIP = [sys.executable, "-m", "nczip"]


def timed(cmd: list[str], repeat: int = 1) -> tuple[bytes, float]:
    """stdout of `cmd` (which names its input file, as a user would) and its median wall time."""
    times, out = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, check=True).stdout
        times.append(time.perf_counter() - started)
    return out, statistics.median(times)


def _text(data: bytes) -> bool:
    from nczip import route

    return any(span.text for span in route.plan(data[: 1 << 20]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--limit", type=int, help="use only the first BYTES of each file")
    args = parser.parse_args()
    paths = [Path(f) for f in args.files] or [p for p in (locate.find(n) for n in FILES) if p is not None]
    print(f"{'file':<16} {'bytes':>9} {'nczip':>9} {'zstd -19':>9} {'xz -9':>9} {'margin':>7} "
          f"{'t nczip':>8} {'t zstd':>7} {'t xz':>7} {'x zstd':>7}  segments")
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            data = path.read_bytes()[: args.limit] if args.limit else path.read_bytes()
            src = Path(tmp) / "input"
            src.write_bytes(data)
            archive, t_nczip = timed([*NCZIP, "-c", "-q", str(src)], 1 if _text(data) else 3)
            (Path(tmp) / "a.ncz").write_bytes(archive)
            back, _ = timed([*NCZIP, "-d", "-c", str(Path(tmp) / "a.ncz")])
            if back != data:
                print(f"{path.name}: ROUND TRIP FAILED", file=sys.stderr)
                return 1
            zstd, t_zstd = timed(["zstd", "-19", "-c", str(src)], 3)
            xz, t_xz = timed(["xz", "-9", "-c", str(src)], 3)
            info = subprocess.run([*NCZIP, "info", str(Path(tmp) / "a.ncz")], capture_output=True, text=True).stdout
            methods = [line.split()[1] for line in info.splitlines() if line.strip()[:1].isdigit()]
            margin = len(archive) - min(len(zstd), len(xz))
            print(f"{path.name:<16} {len(data):>9} {len(archive):>9} {len(zstd):>9} {len(xz):>9} {margin:>7} "
                  f"{t_nczip:>8.3f} {t_zstd:>7.3f} {t_xz:>7.3f} {t_nczip / t_zstd:>7.2f}  {' '.join(methods)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
