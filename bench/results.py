"""Regenerate README's results table, its plot (docs/bench.png) and the full table in
docs/performance.md in one command.

    python bench/results.py [--limit BYTES] [--model FILE.gguf] [--threads N] [--print]
    python bench/results.py --files asyoulik.txt lcet10.txt --merge   # part of the corpus
    python bench/results.py --render                                  # from bench/results.json

Runs `nczip bench` on the standard text corpus (corpora/manifest.json: alice29.txt, asyoulik.txt,
lcet10.txt, plrabn12.txt, html, urls.10K and the first 1 MB of enwik8.head), every nczip row a
verified round trip, and rewrites the block between README's "results: begin" and "results: end"
markers with the machine (CPU model, cores), the date, the nczip version and commit, a table of
bits per byte per file and compressor, and the plot; docs/performance.md's block of the same
markers gets every measured column. The raw numbers go to bench/results.json (--json), which is committed, so that the
corpus can be measured in parts over several sittings. --print prints the block and leaves
README and the plot alone. Nothing is written when a round trip fails.

The whole corpus is about 3 MB: at nczip's ~0.6 KB/s each way on 2 cores that is about 3 hours.
Run it on an otherwise idle machine: llama.cpp's threads spin, and other load distorts timings.
It can be run in parts: --files measures only the named corpus files, and --merge folds them into
the existing JSON (replacing those files' rows); README is rewritten once every file is there. --render rewrites README, docs/performance.md
and the plot from the JSON alone, measuring nothing.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nczip import bench  # noqa: E402

BEGIN = "<!-- results: begin (bench/results.py writes this block) -->"
END = "<!-- results: end -->"
PLOT = Path("docs/bench.png")


def replace_block(readme: str, block: str) -> str:
    """README with the text between the BEGIN and END markers replaced by `block`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {BEGIN!r} ... {END!r} block")
    return readme[: start + len(BEGIN)] + "\n" + block.rstrip("\n") + "\n" + readme[end:]


# What this script writes itself does not make the measured code "dirty": a run in parts
# rewrites results.json between its sittings.
OWN_OUTPUTS = ("bench/results.json", "README.md", "docs/performance.md", PLOT.as_posix())


def commit() -> str:
    """The commit measured, with "-dirty" when code differs from it (not this script's outputs)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  *(f":!{path}" for path in OWN_OUTPUTS)],
                                 cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")


def manifest_files():
    from corpora import manifest

    return manifest.bench_files()


def measured_when(runs: list[dict]) -> str:
    """Which day, version and commit measured which files: runs that share all three make one
    clause ("2026-11-30, nczip 0.1.0 (commit c) for a, b"); files are named only when the
    clauses differ."""
    groups: dict[str, list[str] | None] = {}
    for run in runs:
        key = f"{run['date'][:10]}, nczip {run['nczip_version']} (commit {run['commit']})"
        if run["files"] is None:
            groups[key] = None  # a whole-corpus run: no file list for its clause
        elif groups.setdefault(key, []) is not None:
            groups[key].extend(run["files"])
    return "; ".join(key + (f" for {', '.join(files)}" if files and len(groups) > 1 else "")
                     for key, files in groups.items())


def preamble(report: bench.Report, settings: str) -> str:
    meta, machine = report.meta, report.meta["machine"]
    scope = f"the first {meta['limit']:,} bytes of each file" if meta["limit"] else "whole files except as noted under the table"
    runs = meta.get("runs") or [{"date": meta["date"], "nczip_version": meta["nczip_version"],
                                 "commit": meta.get("commit") or commit(), "files": None}]
    return (f"Measured on {machine['cpu']} ({machine['physical_cores']} physical cores, "
            f"{machine['logical_cpus']} logical CPUs): {measured_when(runs)}; {settings}; {scope}.")


# README's table: bits per byte, nczip against the usual compressors at their strongest settings.
SUMMARY_TOOLS = ("nczip", "xz -9e", "zstd -19 --long", "bzip2 -9", "gzip -9")


def summary_markdown(report: bench.Report) -> str:
    """One row per file: each compressor's bpb (the smallest in bold) and nczip's speed."""
    rows = {(r.file, r.compressor): r for r in report.rows}
    lines = ["| file | bytes | " + " | ".join(SUMMARY_TOOLS) + " | nczip KB/s (compress / decompress) |",
             "| --- | ---: |" + " ---: |" * (len(SUMMARY_TOOLS) + 1)]
    for f in report.files:
        found = [rows.get((f.name, tool)) for tool in SUMMARY_TOOLS]
        values = [r.bpb if r is not None and r.status == "ok" else None for r in found]
        best = min((v for v in values if v is not None), default=None)
        cells = ["-" if v is None else (f"**{v:.3f}**" if v == best else f"{v:.3f}") for v in values]
        own = found[0]
        speed = (f"{own.compress_kbps:.2f} / {own.decompress_kbps:.2f}"
                 if own is not None and own.status == "ok" and own.compress_kbps and own.decompress_kbps else "-")
        lines.append(f"| {f.name} | {f.bytes:,} | " + " | ".join(cells) + f" | {speed} |")
    extra = bench.notes(report)
    if extra:
        lines += [""] + [f"- {n}" for n in extra]
    return "\n".join(lines) + "\n"


def render(report: bench.Report, plot_path: Path | None, settings: str = "default settings") -> str:
    """README's block: bits per byte (lower is better) and the plot."""
    lines = [
        preamble(report, settings) + " Bits per byte of the archive (lower is better); every row is "
        "a round trip checked byte for byte. Sizes, speeds and memory of every compressor: "
        "[docs/performance.md](docs/performance.md).",
        "",
        summary_markdown(report).rstrip("\n"),
    ]
    if plot_path is not None:
        lines += ["", f"![bits per byte per file, and against compress speed]({plot_path.as_posix()})"]
    return "\n".join(lines) + "\n"


def render_full(report: bench.Report, settings: str = "default settings") -> str:
    """docs/performance.md's block: every column."""
    lines = [
        preamble(report, settings) + " Every row is a round trip through separate compress and decompress "
        "processes, compared byte for byte; speeds are wall clock per process (start-up and model loading "
        "included; nczip's compress also measures the ideal code length, `-vv`), KB = 1024 bytes. "
        "LLM ideal: −Σ log2 p of the language model alone. Peak RSS: the larger of the two processes'.",
        "",
        bench.format_markdown(report).rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


def write_outputs(report: bench.Report, args, settings: str) -> None:
    bench.plot(report, args.plot)
    args.readme.write_text(replace_block(args.readme.read_text(), render(report, PLOT, settings)))
    if args.docs.exists():
        args.docs.write_text(replace_block(args.docs.read_text(), render_full(report, settings)))
    print(f"results.py: wrote {args.readme}, {args.docs}, {args.plot} and {args.json}", file=sys.stderr)


def settings_of(report: bench.Report, model: str | None, threads: int | None) -> str:
    named = (("model", model and Path(model).name), ("threads", threads), ("limit", report.meta.get("limit")))
    return ", ".join(f"--{k} {v}" for k, v in named if v) or "default settings"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="bytes of each file (default: whole files, enwik8.head 1 MB)")
    parser.add_argument("--model", default=None, help="GGUF model (default: Gemma-3-270M)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "performance.md", help="gets the full table")
    parser.add_argument("--plot", type=Path, default=ROOT / PLOT, help=f"the plot (default: {PLOT}; README links {PLOT})")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json", help="the raw numbers (committed)")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the block; write nothing")
    parser.add_argument("--files", nargs="+", metavar="NAME", help="measure only these corpus files")
    parser.add_argument("--merge", action="store_true", help="fold this run into the existing --json file")
    parser.add_argument("--render", action="store_true", help="rewrite README, docs and plot from --json; measure nothing")
    args = parser.parse_args()

    if args.render:
        bench.require_matplotlib()
        report = bench.from_json(args.json.read_text())
        write_outputs(report, args, settings_of(report, args.model, args.threads))
        return 0

    if not args.print_only:
        bench.require_matplotlib()
        replace_block(args.readme.read_text(), "")  # fail now, not after hours, if the markers are gone
    corpus = [f.name for f in manifest_files()]
    unknown = sorted(set(args.files or ()) - set(corpus))
    if unknown:
        raise bench.BenchError(f"not in the text corpus: {', '.join(unknown)} (it has {', '.join(corpus)})")
    inputs, missing = bench.resolve_inputs(list(args.files or ()), args.limit)
    tools = [bench.nczip_tool(model=args.model, threads=args.threads), *bench.external_tools()]
    report = bench.run(
        inputs, tools, missing=missing, limit=args.limit,
        on_file=lambda f: print(f"{f.name} ({f.bytes:,} bytes)", file=sys.stderr, flush=True),
        on_row=lambda r: print(f"  {r.compressor}: {r.status}" + (f", {r.bpb:.4f} bpb" if r.bpb else ""), file=sys.stderr, flush=True),
    )
    report.meta["commit"] = commit()
    if args.merge and args.json.exists():
        report = bench.merge(bench.from_json(args.json.read_text()), report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(bench.to_json(report))
    absent = sorted(set(corpus) - {f.name for f in report.files})
    if absent:
        print(bench.format_table(report), file=sys.stderr)
        print(f"results.py: wrote {args.json}; README waits for {', '.join(absent)}", file=sys.stderr)
        return 0 if not report.failed else 1
    if report.failed or report.missing or not report.files:
        print(bench.format_table(report), file=sys.stderr)
        print("results.py: not updating README: a run failed or a corpus file is missing", file=sys.stderr)
        return 1
    settings = settings_of(report, args.model, args.threads)
    if args.print_only:
        print(render(report, None, settings), end="")
        return 0
    write_outputs(report, args, settings)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bench.BenchError as exc:
        sys.exit(f"results.py: {exc}")
