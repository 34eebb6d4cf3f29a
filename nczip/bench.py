"""`nczip bench`: nczip against gzip, bzip2, xz and zstd, file by file.

Every row is one compressor on one file: compress in a child process, decompress in another,
compare the bytes. Each child is timed by wall clock (start-up and model loading included, as a
user running the command would see) and its peak RSS is that program's own (time(1)'s %M, else
os.wait4(); see run_child). nczip rows run ``python -m nczip`` with ``-vv`` and take the
LLM-alone ideal code length (-sum log2 p) from its "ideal X bpb" line.

    inputs, missing = resolve_inputs(files, limit)
    report = run(inputs, tools)         # measure
    format_table(report)                # terminal table; format_markdown() for docs/performance.md
    to_json(report), to_csv(report)     # for scripts
    plot(report, "bench.png")           # needs matplotlib (pip install 'nczip[bench]')

Speeds are KB/s with KB = 1024 bytes, as `nczip -v` prints them.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import __version__


class BenchError(Exception):
    """A benchmark could not be set up (bad arguments, missing plot library); one line for the CLI."""


# -- what runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tool:
    """One compressor: argv to compress a file (its path is appended) to standard output, and argv
    to decompress standard input to standard output."""

    name: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    suffix: str
    env: dict[str, str] | None = field(default=None, compare=False)
    reports_ideal: bool = False  # prints nczip's "ideal X bpb" line on stderr

    @property
    def command(self) -> str:
        return " ".join(self.compress)

    def available(self) -> bool:
        return shutil.which(self.compress[0]) is not None and shutil.which(self.decompress[0]) is not None


def external_tools() -> list[Tool]:
    """The baselines, at the settings people quote: the strongest standard level of each."""
    return [
        Tool("gzip -9", ("gzip", "-9", "-c"), ("gzip", "-d", "-c"), ".gz"),
        Tool("bzip2 -9", ("bzip2", "-9", "-c"), ("bzip2", "-d", "-c"), ".bz2"),
        Tool("xz -9e", ("xz", "-9e", "-c"), ("xz", "-d", "-c"), ".xz"),
        Tool("zstd -19", ("zstd", "-q", "-19", "-c"), ("zstd", "-q", "-d", "-c"), ".zst"),
        # 2^27 is the largest window zstd decodes without being told to: a user's plain `zstd -d` works.
        Tool("zstd -19 --long", ("zstd", "-q", "-19", "--long=27", "-c"), ("zstd", "-q", "-d", "--long=27", "-c"), ".zst"),
    ]


def nczip_tool(
    *,
    model: str | None = None,
    threads: int | None = None,
    level: int | None = None,
    window: int | None = None,
    lanes: int | None = None,
    llm_only: bool = False,
) -> Tool:
    """nczip as a child process of this very Python and this very nczip package (not whatever
    `nczip` is first on PATH), with the coding flags in the row's name."""
    flags: list[str] = []
    if level is not None:
        flags += [f"-{level}"]
    if window is not None:
        flags += ["--window", str(window)]
    if lanes is not None:
        flags += ["--lanes", str(lanes)]
    if llm_only:
        flags.append("--llm-only")
    shared: list[str] = []
    if model is not None:
        shared += ["--model", str(model)]
    if threads is not None:
        shared += ["--threads", str(threads)]
    base = (sys.executable, "-m", "nczip")
    return Tool(
        name=" ".join(["nczip", *flags]),
        compress=(*base, "compress", "-c", "-vv", *shared, *flags),
        decompress=(*base, "decompress", "-c", *shared),
        suffix=".ncz",
        env=child_env(),
        reports_ideal=True,
    )


def child_env() -> dict[str, str]:
    """This environment, with this nczip package first on the child's import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# -- inputs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    name: str  # as the table shows it
    path: Path
    limit: int | None  # benchmark the first `limit` bytes (None: all)


@dataclass(frozen=True)
class Missing:
    name: str
    reason: str  # "expected at A or B", "not a regular file", ...


def resolve_inputs(args: Sequence[str], limit: int | None) -> tuple[list[Input], list[Missing]]:
    """FILES as given: an existing path, or the name of a corpus file (found through corpora/);
    none: the manifest's text corpus. A corpus file chosen by name gets its manifest
    default_limit unless `limit` is given."""
    try:
        from corpora import locate, manifest  # installed beside nczip, or the checkout's
    except ImportError:
        if not args:
            raise BenchError("no FILES given and the corpus manifest (package corpora) is not importable; name FILES by path") from None
        locate = manifest = None

    inputs: list[Input] = []
    missing: list[Missing] = []
    used: set[str] = set()
    for arg in args or [f.name for f in manifest.bench_files()]:
        path = Path(arg)
        entry = manifest.get(arg) if manifest is not None else None
        if path.is_file():
            name = path.name if path.name not in used else arg
            inputs.append(Input(name, path, limit))
        elif path.exists():
            missing.append(Missing(arg, "not a regular file"))
            continue
        elif entry is not None and (found := locate.find(arg)) is not None:
            inputs.append(Input(arg, found, limit if limit is not None else entry.default_limit))
        elif entry is not None:
            where = " or ".join(str(p) for p in locate.expected_paths(arg))
            missing.append(Missing(arg, f"expected at {where}; source: {entry.source}"))
            continue
        else:
            missing.append(Missing(arg, "no such file, and not a corpus name in corpora/manifest.json"))
            continue
        used.add(inputs[-1].name)
    return inputs, missing


# -- measuring --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChildRun:
    returncode: int
    seconds: float
    max_rss_bytes: int
    stderr: str


def run_child(argv: Sequence[str], *, stdin: Path | None, stdout: Path, env: dict[str, str] | None = None) -> ChildRun:
    """Run argv with stdin/stdout redirected to files; wall time and that program's own peak RSS.

    A child forked from Python starts with Python's pages mapped, and Linux keeps that as the
    floor of its ru_maxrss even after exec: measured straight from os.wait4(), gzip would show
    this process's ~40 MB instead of its own ~1.5 MB. So the program runs under time(1), a small
    C program that forks it and reports its own %M. Without time(1) the figure is os.wait4()'s,
    with that floor.
    """
    timer = time_command()
    with tempfile.TemporaryDirectory(prefix="nczip-child-") as tmp:
        rss_file = Path(tmp) / "rss"
        command = [*timer, "-o", str(rss_file), *argv] if timer else list(argv)
        with open(stdin if stdin is not None else os.devnull, "rb") as fin, open(stdout, "wb") as fout, open(Path(tmp) / "err", "w+b") as ferr:
            started = time.perf_counter()
            proc = subprocess.Popen(command, stdin=fin, stdout=fout, stderr=ferr, env=env)
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except BaseException:  # interrupted: leave no child behind
                proc.kill()
                proc.wait()
                raise
            seconds = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            ferr.seek(0)
            err = ferr.read().decode("utf-8", "replace")
        # ru_maxrss is in KiB on Linux, in bytes on macOS.
        rss = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
        if timer:
            rss = _time_rss(rss_file, rss)
    return ChildRun(proc.returncode, seconds, rss, err)


def _time_rss(path: Path, fallback: int) -> int:
    """time(1)'s -o file ends with the %M line (KiB); before it may come "Command exited ..."."""
    try:
        last = path.read_text().split()[-1]
        return int(last) * 1024
    except (OSError, IndexError, ValueError):
        return fallback


@functools.lru_cache(maxsize=None)
def time_command() -> tuple[str, ...] | None:
    """["/usr/bin/time", "-f", "%M"] when a time(1) that takes -f and -o is installed (GNU, BusyBox)."""
    path = shutil.which("time")
    if path is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rss"
        try:
            probe = subprocess.run([path, "-f", "%M", "-o", str(out), sys.executable, "-c", ""], capture_output=True, timeout=60)
            ok = probe.returncode == 0 and out.read_text().split()[-1].isdigit()
        except (OSError, IndexError, subprocess.SubprocessError):
            ok = False
    return (path, "-f", "%M") if ok else None


def rss_method() -> str:
    if time_command():
        return "time -f %M: the program's own peak RSS"
    return "os.wait4 ru_maxrss: at least this process's RSS when it forked the child"


@dataclass
class Row:
    """One compressor on one file. status: "ok", "failed" (error says why) or "missing" (tool not found)."""

    file: str
    original_bytes: int
    compressor: str
    command: str
    status: str = "ok"
    compressed_bytes: int | None = None
    compress_s: float | None = None
    decompress_s: float | None = None
    compress_rss_bytes: int | None = None
    decompress_rss_bytes: int | None = None
    ideal_bpb: float | None = None
    error: str | None = None

    @property
    def bpb(self) -> float | None:
        if self.compressed_bytes is None or not self.original_bytes:
            return None
        return self.compressed_bytes * 8 / self.original_bytes

    @property
    def compress_kbps(self) -> float | None:
        return _kbps(self.original_bytes, self.compress_s)

    @property
    def decompress_kbps(self) -> float | None:
        return _kbps(self.original_bytes, self.decompress_s)

    @property
    def peak_rss_bytes(self) -> int | None:
        values = [v for v in (self.compress_rss_bytes, self.decompress_rss_bytes) if v is not None]
        return max(values) if values else None

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(bpb=self.bpb, compress_kbps=self.compress_kbps, decompress_kbps=self.decompress_kbps, peak_rss_bytes=self.peak_rss_bytes)
        return d


FIELDS = [
    "file", "original_bytes", "compressor", "status", "compressed_bytes", "bpb", "ideal_bpb",
    "compress_s", "decompress_s", "compress_kbps", "decompress_kbps",
    "compress_rss_bytes", "decompress_rss_bytes", "peak_rss_bytes", "command", "error",
]


def _kbps(size: int, seconds: float | None) -> float | None:
    return size / 1024 / seconds if seconds else None


_IDEAL = re.compile(r"ideal ([0-9.]+) bpb")


def measure(tool: Tool, name: str, data: bytes, source: Path, work: Path) -> Row:
    """Compress `source` (whose bytes are `data`) with `tool`, decompress, compare: one Row."""
    row = Row(name, len(data), tool.name, tool.command)
    if not tool.available():
        row.status, row.error = "missing", f"{tool.compress[0]} not found on PATH"
        return row
    archive, restored = work / f"archive{tool.suffix}", work / "restored"
    try:
        packed = run_child([*tool.compress, str(source)], stdin=None, stdout=archive, env=tool.env)
        row.compress_s, row.compress_rss_bytes = packed.seconds, packed.max_rss_bytes
        if packed.returncode != 0:
            return _failed(row, f"compress exited with status {packed.returncode}", packed.stderr)
        row.compressed_bytes = archive.stat().st_size
        if tool.reports_ideal and (found := _IDEAL.findall(packed.stderr)):
            row.ideal_bpb = float(found[-1])
        unpacked = run_child(tool.decompress, stdin=archive, stdout=restored, env=tool.env)
        row.decompress_s, row.decompress_rss_bytes = unpacked.seconds, unpacked.max_rss_bytes
        if unpacked.returncode != 0:
            return _failed(row, f"decompress exited with status {unpacked.returncode}", unpacked.stderr)
        if restored.read_bytes() != data:
            return _failed(row, f"round trip differs from the input ({restored.stat().st_size} bytes back, {len(data)} in)", "")
    except OSError as exc:  # e.g. the tool is not executable
        return _failed(row, f"cannot run: {exc.strerror or exc}", "")
    finally:
        for path in (archive, restored):
            path.unlink(missing_ok=True)
    return row


def _failed(row: Row, message: str, stderr: str) -> Row:
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    row.status, row.error = "failed", f"{message}: {last}" if last else message
    return row


@dataclass
class FileInfo:
    name: str
    path: str
    bytes: int  # benchmarked (after --limit)
    file_bytes: int  # the whole file
    sha256: str  # of the benchmarked bytes


@dataclass
class Report:
    rows: list[Row]
    files: list[FileInfo]
    missing: list[Missing]
    meta: dict

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.status == "failed"]


def run(
    inputs: Sequence[Input],
    tools: Sequence[Tool],
    *,
    missing: Sequence[Missing] = (),
    limit: int | None = None,
    on_row: Callable[[Row], None] | None = None,
    on_file: Callable[[FileInfo], None] | None = None,
) -> Report:
    """Every tool on every input, one file at a time, in a private temporary directory."""
    rows: list[Row] = []
    files: list[FileInfo] = []
    with tempfile.TemporaryDirectory(prefix="nczip-bench-") as tmp:
        for i, item in enumerate(inputs):
            with open(item.path, "rb") as f:
                data = f.read(item.limit) if item.limit is not None else f.read()
            info = FileInfo(item.name, str(item.path), len(data), item.path.stat().st_size, hashlib.sha256(data).hexdigest())
            files.append(info)
            if on_file:
                on_file(info)
            work = Path(tmp) / str(i)
            work.mkdir()
            source = work / item.path.name  # the original name: gzip stores it in its header
            source.write_bytes(data)
            for tool in tools:
                row = measure(tool, item.name, data, source, work)
                rows.append(row)
                if on_row:
                    on_row(row)
            shutil.rmtree(work)
    return Report(rows, files, list(missing), metadata(limit, tools))


def metadata(limit: int | None, tools: Sequence[Tool]) -> dict:
    return {
        "nczip_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "limit": limit,
        "machine": machine(),
        "compressors": {t.name: t.command for t in tools},
        "peak_rss": rss_method(),
    }


def machine() -> dict:
    """CPU model, physical cores and logical CPUs, OS and Python: what a reader needs to weigh the speeds."""
    from .options import physical_cores

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


# -- output ----------------------------------------------------------------------------------------
COLUMNS = ["file", "bytes", "compressor", "compressed", "bpb", "LLM ideal bpb", "compress KB/s", "decompress KB/s", "peak RSS MB"]


def _cells(row: Row) -> list[str]:
    head = [row.file, f"{row.original_bytes:,}", row.compressor]
    if row.status == "missing":
        return head + ["not found"] + [""] * 5
    if row.status == "failed":
        return head + ["FAILED"] + [""] * 5
    rss = row.peak_rss_bytes
    return head + [
        f"{row.compressed_bytes:,}",
        f"{row.bpb:.4f}" if row.bpb is not None else "-",
        f"{row.ideal_bpb:.4f}" if row.ideal_bpb is not None else "",
        _speed(row.compress_kbps),
        _speed(row.decompress_kbps),
        _megabytes(rss),
    ]


def _megabytes(size: int | None) -> str:
    if size is None:
        return "-"
    mb = size / 2**20
    return f"{mb:.1f}" if mb < 10 else f"{mb:,.0f}"


def _speed(kbps: float | None) -> str:
    if kbps is None:
        return "-"
    return f"{kbps:,.0f}" if kbps >= 100 else f"{kbps:.3g}"


def notes(report: Report) -> list[str]:
    """Lines under the table: prefixes, failures, tools not found, files not found."""
    lines = []
    for f in report.files:
        if f.bytes < f.file_bytes:
            lines.append(f"{f.name}: first {f.bytes:,} of {f.file_bytes:,} bytes")
    for r in report.rows:
        if r.status == "failed":
            lines.append(f"FAILED: {r.file}: {r.compressor}: {r.error}")
    for name, error in dict.fromkeys((r.compressor, r.error) for r in report.rows if r.status == "missing"):
        lines.append(f"not run: {name}: {error}")
    for m in report.missing:
        lines.append(f"missing: {m.name} ({m.reason})")
    return lines


def format_table(report: Report) -> str:
    """Aligned plain text, one row per file and compressor, then notes()."""
    table = [COLUMNS] + [_cells(r) for r in report.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    left = {0, 2}  # file and compressor names read left-aligned; numbers right-aligned
    out = ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip() for line in table]
    return "\n".join(out + notes(report)) + "\n"


def format_markdown(report: Report) -> str:
    """The same table in Markdown (docs/performance.md), the best bpb of each file in bold."""
    best = {}
    for r in report.rows:
        if r.status == "ok" and r.bpb is not None:
            best[r.file] = min(best.get(r.file, r.bpb), r.bpb)
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | ---: | --- |" + " ---: |" * (len(COLUMNS) - 3)]
    for r in report.rows:
        cells = _cells(r)
        if r.bpb is not None and r.status == "ok" and r.bpb == best.get(r.file):
            cells[4] = f"**{cells[4]}**"
        lines.append("| " + " | ".join(cells) + " |")
    extra = notes(report)
    if extra:
        lines += [""] + [f"- {n}" for n in extra]
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(
        {
            **report.meta,
            "files": [dataclasses.asdict(f) for f in report.files],
            "missing": [dataclasses.asdict(m) for m in report.missing],
            "rows": [r.as_dict() for r in report.rows],
        },
        indent=2,
    ) + "\n"


def from_json(text: str) -> Report:
    """The Report that to_json wrote (bpb, speeds and peak RSS are recomputed from the raw fields)."""
    data = json.loads(text)
    row_fields = {f.name for f in dataclasses.fields(Row)}
    rows = [Row(**{k: v for k, v in r.items() if k in row_fields}) for r in data.pop("rows")]
    files = [FileInfo(**f) for f in data.pop("files")]
    missing = [Missing(**m) for m in data.pop("missing")]
    return Report(rows, files, missing, data)


def merge(old: Report, new: Report) -> Report:
    """`old` with the files that `new` measured replaced by `new`'s rows (the corpus measured in
    parts, a few files per run). meta["runs"] keeps each run's date, version, commit and files."""
    measured = {f.name for f in new.files}
    runs = [run for run in old.meta.get("runs", [_run_of(old)]) if set(run["files"]) - measured]
    for run in runs:
        run["files"] = [name for name in run["files"] if name not in measured]
    meta = {**new.meta, "runs": [*runs, _run_of(new)]}
    if old.meta.get("limit") != new.meta.get("limit"):
        raise BenchError(f"cannot merge a run with --limit {new.meta.get('limit')} into one with {old.meta.get('limit')}")
    return Report(
        [r for r in old.rows if r.file not in measured] + new.rows,
        [f for f in old.files if f.name not in measured] + new.files,
        [m for m in old.missing if m.name not in measured] + [m for m in new.missing],
        meta,
    )


def _run_of(report: Report) -> dict:
    meta = report.meta
    return {
        "date": meta.get("date"), "nczip_version": meta.get("nczip_version"), "commit": meta.get("commit"),
        "files": [f.name for f in report.files],
    }


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in report.rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.as_dict().items()})
    return out.getvalue()


# -- plot ---------------------------------------------------------------------------------------------
PLOT_HINT = "--plot needs matplotlib: pip install 'nczip[bench]'"


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise BenchError(PLOT_HINT)


def plot(report: Report, path: str | os.PathLike, title: str | None = None) -> None:
    """Two panels: bpb per file per compressor (with the LLM's ideal), and bpb against compress speed."""
    require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    ok = [r for r in report.rows if r.status == "ok" and r.bpb is not None]
    files = list(dict.fromkeys(r.file for r in ok))
    tools = list(dict.fromkeys(r.compressor for r in ok))
    by_key = {(r.file, r.compressor): r for r in ok}
    fig = Figure(figsize=(max(8, 1.6 * len(files)) + 6, 5.5))
    bars, speed = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(2, len(files)), 3]})
    width = 0.8 / max(1, len(tools))
    for j, tool in enumerate(tools):
        xs = [i - 0.4 + width * (j + 0.5) for i, f in enumerate(files) if (f, tool) in by_key]
        ys = [by_key[f, tool].bpb for f in files if (f, tool) in by_key]
        bars.bar(xs, ys, width, label=tool, color=f"C{j}")
        points = [by_key[f, tool] for f in files if (f, tool) in by_key and by_key[f, tool].compress_kbps]
        speed.scatter([r.compress_kbps for r in points], [r.bpb for r in points], label=tool, color=f"C{j}")
    ideal = [(i, r.ideal_bpb) for i, f in enumerate(files) for r in ok if r.file == f and r.ideal_bpb is not None]
    if ideal:
        bars.scatter([i for i, _ in ideal], [v for _, v in ideal], marker="_", s=400, color="black", label="LLM ideal", zorder=3)
    bars.set_xticks(range(len(files)), files, rotation=30, ha="right")
    bars.set_ylabel("bits per byte (lower is better)")
    bars.legend(fontsize="small")
    speed.set_xscale("log")
    speed.set_xlabel("compress speed, KB/s (log scale)")
    speed.set_ylabel("bits per byte")
    speed.set_title("each point: one file")
    speed.legend(fontsize="small")
    fig.suptitle(title or plot_title(report))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_title(report: Report) -> str:
    m = report.meta
    cpu = m.get("machine", {})
    return f"nczip {m.get('nczip_version', '?')} bench, {cpu.get('cpu', '?')} ({cpu.get('physical_cores', '?')} cores), {m.get('date', '')[:10]}"
