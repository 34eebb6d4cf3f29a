"""nczip's engine against llama.cpp, side by side on one machine: the CLI compressing and
decompressing a file as a user runs it, each in its own process (model loading included),
with the archive size, the round trip checked byte for byte, KB/s each way and peak RSS.

    python bench/engine.py [FILE] [--limit BYTES] [--runs engine,engine-avx2,llama] [--json OUT]

Runs (each one a compress and a decompress process):
  engine          --backend engine, the best kernels this CPU runs
  engine-avx2     the same with NCZIP_KERNEL=avx2: the AVX2 kernels, a stand-in for an AVX2 machine
  engine-portable the same with NCZIP_KERNEL=portable: the plain C loops that define the bits
  llama           --backend llama (llama.cpp, with nczip's own head)
Default: alice29.txt from the corpus (corpora/ finds it), runs engine, engine-avx2 and llama.
Prints a Markdown table headed by the CPU's model and SIMD features. KB = 1024 bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import locate  # noqa: E402

RUNS = {
    "engine": (["--backend", "engine"], {}),
    "engine-avx2": (["--backend", "engine"], {"NCZIP_KERNEL": "avx2"}),
    "engine-portable": (["--backend", "engine"], {"NCZIP_KERNEL": "portable"}),
    "llama": (["--backend", "llama"], {}),
}
FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_description() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("?", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in FEATURES if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs; {' '.join(have) or 'no AVX2'}"


def print_rows(path: Path, data: bytes, limit: int | None, rows: list[dict], json_path: str | None) -> None:
    """The rows as a Markdown table headed by the input and this CPU, and as JSON if asked
    (bench/levels.py prints its rows the same way)."""
    title = f"{path.name}{f' (first {len(data):,} bytes)' if limit else ''}, {len(data):,} bytes; {cpu_description()}"
    print(title)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    if json_path:
        Path(json_path).write_text(json.dumps({"input": title, "rows": rows}, indent=1) + "\n")


def timed(command: list[str], env: dict, stdin, stdout) -> tuple[float, int]:
    """(wall seconds, peak RSS in MB) of one process, measured by GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        started = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *command], stdin=stdin, stdout=stdout,
                       env=env, check=True)
        seconds = time.perf_counter() - started
        rss_kb = int(t.read().split()[-1])
    return seconds, rss_kb // 1024


def run(name: str, data_path: Path, size: int, work: Path) -> dict:
    flags, extra_env = RUNS[name]
    env = {**os.environ, **extra_env}
    nczip = [sys.executable, "-m", "nczip"]
    archive, output = work / f"{name}.ncz", work / f"{name}.out"
    with open(data_path, "rb") as src, open(archive, "wb") as dst:
        c_sec, c_rss = timed([*nczip, "-c", *flags], env, src, dst)
    with open(archive, "rb") as src, open(output, "wb") as dst:
        d_sec, d_rss = timed([*nczip, "-d", "-c"], env, src, dst)
    same = output.read_bytes() == data_path.read_bytes()
    compressed = archive.stat().st_size
    return {
        "run": name, "bytes": compressed, "bpb": round(compressed * 8 / size, 4),
        "compress s": round(c_sec, 1), "compress KB/s": round(size / 1024 / c_sec, 3),
        "decompress s": round(d_sec, 1), "decompress KB/s": round(size / 1024 / d_sec, 3),
        "peak RSS MB": max(c_rss, d_rss), "round trip": "exact" if same else "DIFFERS",
        "archive sha256": __import__("hashlib").sha256(archive.read_bytes()).hexdigest()[:16],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", help="default: alice29.txt from the corpus")
    parser.add_argument("--limit", type=int, default=None, help="bytes from the start of the file")
    parser.add_argument("--runs", default="engine,engine-avx2,llama", help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    runs = args.runs.split(",")
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    path = Path(args.file) if args.file else locate.find("alice29.txt")
    data = path.read_bytes()[: args.limit] if args.limit else path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "input"
        source.write_bytes(data)
        rows = [run(name, source, len(data), work) for name in runs]
    print_rows(path, data, args.limit, rows, args.json)
    hashes = {row["archive sha256"] for row in rows if row["run"].startswith("engine")}
    if len(hashes) > 1:
        print("engine runs wrote different archives: the kernels disagree", file=sys.stderr)
        return 1
    return 0 if all(row["round trip"] == "exact" for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
