"""nczip on a Ray cluster of this machine: 1 and 2 workers (1 thread each) against a local run
(2 threads), on one multi-segment input; wall time, time per segment, and the archive compared
byte for byte with the local run's.

    python bench/ray_workers.py [FILE] [--limit BYTES] [--segment-bytes N] [--workers 1,2]

Default: the first 256 KB of enwik8.head, cut into 64 KB segments (segment.SEGMENT_BYTES is
patched in this process, which cuts the input; a real run cuts at 1 MiB), so that a run of a few
minutes has several segments. Ray is started here (ray.init) with the machine's CPUs.
docs/distributed.md turns the time per segment into an estimate for a whole corpus.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpora import locate  # noqa: E402
from engine import cpu_description  # noqa: E402  (bench/engine.py)
from nczip import segment  # noqa: E402
from nczip.api import Compressor  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="default: enwik8.head from the corpus")
    parser.add_argument("--limit", type=int, default=256 * 1024)
    parser.add_argument("--segment-bytes", type=int, default=64 * 1024)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    path = Path(args.file) if args.file else locate.find("enwik8.head")
    data = path.read_bytes()[: args.limit]
    segment.SEGMENT_BYTES = args.segment_bytes
    import ray

    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    started = time.perf_counter()
    with Compressor() as local:
        expected = local.compress(data)
        local_s = time.perf_counter() - started
    chunks = len(list(segment.split(data)))
    rows.append(("local, 2 threads", local_s, expected, "-"))
    for workers in (int(w) for w in args.workers.split(",")):
        with Compressor(ray="local", ray_workers=workers, threads=1) as c:
            c.cluster().worker_pids()  # the workers are up before the clock starts
            started = time.perf_counter()
            archive = c.compress(data)
            seconds = time.perf_counter() - started
            decoded = c.decompress(archive)
        rows.append((f"Ray, {workers} worker{'s' * (workers > 1)} x 1 thread", seconds, archive,
                     "exact" if decoded == data else "DIFFERS"))
    print(f"{path.name}, first {len(data):,} bytes in {chunks} segments of at most {args.segment_bytes:,} bytes; "
          f"{cpu_description()}; models loaded before timing (Ray) or included (local)")
    print("| run | compress s | s per segment | KB/s | archive | same as local | round trip through Ray |")
    print("|---|---:|---:|---:|---:|---|---|")
    for name, seconds, archive, trip in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / chunks:.1f} | {len(data) / 1024 / seconds:.2f} | "
              f"{len(archive):,} | {'yes' if archive == expected else 'NO'} | {trip} |")
    ray.shutdown()
    ok = all(archive == expected and trip in ("exact", "-") for _, _, archive, trip in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
