"""`nczip bench` and the corpus manifest: table, JSON and CSV on small inputs, --limit, missing
files and tools, failed round trips, per-child peak RSS, the plot, and the manifest against the
corpus files at hand.

nczip rows run the tiny random-weight model (``--model ... --threads 1``) in child processes;
inputs are a few hundred bytes, so a whole bench run takes a few seconds.
"""
from __future__ import annotations

import csv
import doctest
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import corpora.manifest
from corpora import locate, manifest
from nczip import __version__, bench, cli

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ["nczip", "gzip -9", "bzip2 -9", "xz -9e", "zstd -19", "zstd -19 --long"]
LIMIT = 300
PROSE = (
    b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    b"nothing to do: once or twice she had peeped into the book her sister was reading, but it had "
    b"no pictures or conversations in it, 'and what is the use of a book,' thought Alice 'without "
    b"pictures or conversations?'\nSo she was considering in her own mind (as well as she could, for "
    b"the hot day made her feel very sleepy and stupid), whether the pleasure of making a "
    b"daisy-chain would be worth the trouble of getting up and picking the daisies.\n"
)
LOG = b"".join(b"2026-11-%02d 12:%02d:07 GET /index.html 200 %d\n" % (d % 28 + 1, d % 60, 1000 + 37 * d) for d in range(20))


def needs_tools():
    absent = [t for t in ("gzip", "bzip2", "xz", "zstd") if shutil.which(t) is None]
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)}")


def child_env() -> dict[str, str]:
    """`python -m nczip` in a child imports this checkout's nczip, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bench_inputs")
    (d / "prose.txt").write_bytes(PROSE)
    (d / "access.log").write_bytes(LOG)
    assert len(PROSE) > LIMIT and len(LOG) > LIMIT
    return {"prose.txt": d / "prose.txt", "access.log": d / "access.log"}


@pytest.fixture(scope="module")
def full_run(tiny_gguf, inputs, tmp_path_factory):
    """One real `python -m nczip bench --limit 300 --json --csv` over two files, in a process."""
    needs_tools()
    out = tmp_path_factory.mktemp("bench_out")
    proc = subprocess.run(
        [sys.executable, "-m", "nczip", "bench", "--model", str(tiny_gguf), "--threads", "1", "--limit", str(LIMIT),
         "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), *map(str, inputs.values())],
        capture_output=True, env=child_env(), timeout=300,
    )
    return proc, out


@pytest.fixture
def run_cli(capsys):
    """In-process `nczip ARGS` -> (rc, stdout, stderr)."""

    def call(*args):
        capsys.readouterr()
        rc = cli.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return call


def table_rows(text: str) -> list[list[str]]:
    """The table's lines split into cells (columns are separated by two or more spaces)."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("file "))
    rows = []
    for line in lines[header + 1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 4:
            break  # the notes under the table
        rows.append(cells)
    return rows


# -- the whole command on two small files ----------------------------------------------------------------
def test_table_has_every_compressor_for_every_file(full_run, inputs):
    proc, _ = full_run
    assert proc.returncode == 0, proc.stderr.decode()
    table = proc.stdout.decode()
    assert table.splitlines()[0].split()[:3] == ["file", "bytes", "compressor"]
    rows = table_rows(table)
    assert [(r[0], r[2]) for r in rows] == [(f, t) for f in inputs for t in TOOLS]
    for cells in rows:
        original, compressed, bpb = int(cells[1].replace(",", "")), int(cells[3].replace(",", "")), float(cells[4])
        assert original == LIMIT
        assert bpb == pytest.approx(8 * compressed / original, abs=5e-5)
    # the nczip row alone has the LLM's ideal code length, in its own column
    nczip_rows = [r for r in rows if r[2] == "nczip"]
    assert all(len(r) == 9 for r in nczip_rows) and all(len(r) == 8 for r in rows if r[2] != "nczip")
    assert "Traceback" not in proc.stderr.decode()


def test_json_has_every_row_with_consistent_fields(full_run, inputs):
    proc, out = full_run
    report = json.loads((out / "r.json").read_text())
    assert report["nczip_version"] == __version__
    assert report["limit"] == LIMIT
    assert report["machine"]["cpu"] and report["machine"]["physical_cores"] >= 1
    assert set(report["compressors"]) == set(TOOLS)
    rows = report["rows"]
    assert [(r["file"], r["compressor"]) for r in rows] == [(f, t) for f in inputs for t in TOOLS]
    for r in rows:
        assert set(bench.FIELDS) <= set(r)
        assert r["status"] == "ok" and r["error"] is None, r
        assert r["original_bytes"] == LIMIT
        assert r["bpb"] == pytest.approx(8 * r["compressed_bytes"] / LIMIT)
        assert r["compress_s"] > 0 and r["decompress_s"] > 0
        assert r["compress_kbps"] == pytest.approx(LIMIT / 1024 / r["compress_s"])
        assert r["peak_rss_bytes"] == max(r["compress_rss_bytes"], r["decompress_rss_bytes"]) > 0
        assert (r["ideal_bpb"] is not None) == (r["compressor"] == "nczip")
    for f in report["files"]:
        data = inputs[f["name"]].read_bytes()
        assert (f["bytes"], f["file_bytes"]) == (LIMIT, len(data))
        assert f["sha256"] == hashlib.sha256(data[:LIMIT]).hexdigest()


def test_csv_has_header_and_the_json_rows(full_run):
    _, out = full_run
    rows = list(csv.DictReader(io.StringIO((out / "r.csv").read_text())))
    assert list(rows[0]) == bench.FIELDS
    expected = json.loads((out / "r.json").read_text())["rows"]
    assert len(rows) == len(expected) == 12
    for got, want in zip(rows, expected):
        assert (got["file"], got["compressor"], got["status"]) == (want["file"], want["compressor"], "ok")
        assert int(got["compressed_bytes"]) == want["compressed_bytes"]
        assert float(got["bpb"]) == pytest.approx(want["bpb"])
        assert got["ideal_bpb"] == ("" if want["ideal_bpb"] is None else str(want["ideal_bpb"]))


def test_limit_benchmarks_the_prefix(full_run, inputs, tmp_path):
    """Sizes are of the first --limit bytes: gzip and xz rows are exactly what the tools make of them."""
    proc, out = full_run
    rows = {(r["file"], r["compressor"]): r for r in json.loads((out / "r.json").read_text())["rows"]}
    for name, path in inputs.items():
        prefix = tmp_path / name  # same name: gzip stores it in its header
        prefix.write_bytes(path.read_bytes()[:LIMIT])
        for tool in ("gzip -9", "xz -9e"):
            argv = tool.split() + ["-c", str(prefix)]
            assert rows[name, tool]["compressed_bytes"] == len(subprocess.run(argv, capture_output=True, check=True).stdout)
        assert f"{name}: first {LIMIT} of {len(path.read_bytes())} bytes" in proc.stdout.decode()


def test_json_to_stdout_moves_the_table_to_stderr(run_cli, tiny_gguf, inputs):
    needs_tools()
    rc, out, err = run_cli("bench", "--model", tiny_gguf, "--threads", 1, "--limit", 100, "--json", "-", inputs["prose.txt"])
    assert rc == 0, err
    report = json.loads(out)  # all of stdout is the JSON
    assert [r["compressor"] for r in report["rows"]] == TOOLS
    assert all(r["original_bytes"] == 100 for r in report["rows"])
    assert [r[2] for r in table_rows(err)] == TOOLS
    assert "Traceback" not in err


# -- files and tools that are not there, round trips that fail ------------------------------------
def test_missing_files_are_reported_not_fatal(run_cli, inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("NCZIP_CORPORA", str(tmp_path))
    monkeypatch.setattr(bench, "nczip_tool", lambda **_: identity_tool())
    monkeypatch.setattr(bench, "external_tools", lambda: [])
    rc, out, err = run_cli("bench", "-q", inputs["prose.txt"], tmp_path / "no-such-file.txt", "dickens")
    assert rc == 0, err
    assert [(r[0], r[2]) for r in table_rows(out)] == [("prose.txt", "identity")]
    assert f"missing: {tmp_path / 'no-such-file.txt'} (no such file" in out
    silesia = manifest.sets()["silesia"].download
    assert f"missing: dickens (expected at {tmp_path / 'dickens'} or " in out and f"source: {silesia})" in out


def test_nothing_to_benchmark_is_an_error(run_cli, tmp_path):
    rc, out, err = run_cli("bench", tmp_path / "absent.txt")
    assert rc == 1 and out == ""
    assert err.splitlines() == [f"missing: {tmp_path / 'absent.txt'} (no such file, and not a corpus name in corpora/manifest.json)", "nczip: no file to benchmark"]


def identity_tool() -> Tool:
    return bench.Tool("identity", ("cat",), ("cat",), ".raw")


Tool = bench.Tool


def test_failed_round_trip_and_missing_tool_are_reported(run_cli, inputs, monkeypatch):
    monkeypatch.setattr(bench, "nczip_tool", lambda **_: identity_tool())
    monkeypatch.setattr(bench, "external_tools", lambda: [
        Tool("truncating", ("cat",), ("head", "-c", "10"), ".raw"),
        Tool("crashing", ("sh", "-c", "echo boom >&2; exit 3"), ("cat",), ".raw"),
        Tool("absent", ("no-such-compressor-xyz", "-c"), ("no-such-compressor-xyz", "-d"), ".x"),
    ])
    rc, out, err = run_cli("bench", "--limit", LIMIT, "--json", "-", inputs["prose.txt"])
    assert rc == 1
    rows = {r["compressor"]: r for r in json.loads(out)["rows"]}
    assert rows["identity"]["status"] == "ok" and rows["identity"]["bpb"] == 8.0
    assert rows["truncating"]["status"] == "failed"
    assert rows["truncating"]["error"] == f"round trip differs from the input (10 bytes back, {LIMIT} in)"
    assert rows["crashing"]["status"] == "failed" and rows["crashing"]["error"] == "compress exited with status 3: boom"
    assert rows["absent"]["status"] == "missing" and rows["absent"]["error"] == "no-such-compressor-xyz not found on PATH"
    # the table (on stderr, as JSON took stdout) says so, and the last line is the one error
    cells = {r[2]: r[3] for r in table_rows(err)}
    assert cells == {"identity": f"{LIMIT}", "truncating": "FAILED", "crashing": "FAILED", "absent": "not found"}
    assert f"FAILED: prose.txt: truncating: round trip differs from the input (10 bytes back, {LIMIT} in)" in err
    assert "not run: absent: no-such-compressor-xyz not found on PATH" in err
    assert err.splitlines()[-1] == "nczip: 2 of 4 runs failed (see FAILED in the table)"


def test_json_and_csv_cannot_both_take_stdout(run_cli, inputs):
    rc, out, err = run_cli("bench", "--json", "-", "--csv", "-", inputs["prose.txt"])
    assert rc == 2 and out == ""
    assert err.startswith("nczip: --json and --csv cannot both write to standard output") and len(err.splitlines()) == 1


# -- measuring -------------------------------------------------------------------------------------------
def test_run_child_measures_each_childs_own_peak_rss(tmp_path):
    big = bench.run_child([sys.executable, "-c", "b = b'x' * (200 * 2**20)"], stdin=None, stdout=tmp_path / "o")
    small = bench.run_child(["true"], stdin=None, stdout=tmp_path / "o")
    assert big.returncode == small.returncode == 0
    assert 200 * 2**20 <= big.max_rss_bytes < 1024 * 2**20
    # not the largest child so far (RUSAGE_CHILDREN), nor floored at this process's size
    if shutil.which("time") is None:
        pytest.skip("no time(1): child RSS is floored at this process's RSS")
    assert bench.time_command() is not None
    assert small.max_rss_bytes < 20 * 2**20


def test_run_child_passes_status_stdin_stdout_and_stderr(tmp_path):
    (tmp_path / "in").write_bytes(b"abc")
    r = bench.run_child(["sh", "-c", "tr a-c x-z; echo oops >&2; exit 5"], stdin=tmp_path / "in", stdout=tmp_path / "out")
    assert (r.returncode, (tmp_path / "out").read_bytes(), r.stderr) == (5, b"xyz", "oops\n")
    assert r.seconds > 0


# -- plot --------------------------------------------------------------------------------------------------
def synthetic_report() -> bench.Report:
    rows = []
    for f, scale in (("a.txt", 1.0), ("b.html", 0.8)):
        for tool, bpb, speed in (("nczip", 1.1, 0.25), ("gzip -9", 2.9, 9000.0), ("xz -9e", 2.5, 900.0)):
            r = bench.Row(f, 1000, tool, tool, compressed_bytes=round(bpb * scale * 1000 / 8),
                          compress_s=1000 / 1024 / speed, decompress_s=1000 / 1024 / speed, compress_rss_bytes=2**20)
            r.ideal_bpb = 1.05 * scale if tool == "nczip" else None
            rows.append(r)
    rows.append(bench.Row("b.html", 1000, "zstd -19", "zstd", status="missing", error="zstd not found on PATH"))
    return bench.Report(rows, [], [bench.Missing("c.txt", "expected at /x/c.txt")], {"nczip_version": "0", "machine": {}, "date": ""})


def test_plot_writes_a_png_with_both_panels(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    bench.plot(synthetic_report(), tmp_path / "p.png", title="test")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(tmp_path / "p.png").shape
    assert width > 1.5 * height  # two panels side by side


def test_plot_without_matplotlib_fails_before_running_anything(run_cli, inputs, monkeypatch, tmp_path):
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(bench.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc, out, err = run_cli("bench", "--plot", tmp_path / "p.png", inputs["prose.txt"])
    assert (rc, out) == (1, "")
    assert err == "nczip: --plot needs matplotlib: pip install 'nczip[bench]'\n"
    assert not (tmp_path / "p.png").exists()


# -- formatting ---------------------------------------------------------------------------------------
def test_markdown_table_bolds_the_best_bpb_of_each_file():
    text = bench.format_markdown(synthetic_report())
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    assert len(lines) == 1 + 1 + 7  # header, alignment, rows
    bold = [line.split(" | ")[2] for line in lines if "**" in line]
    assert bold == ["nczip", "nczip"]
    assert "missing: c.txt (expected at /x/c.txt)" in text and "not run: zstd -19: zstd not found on PATH" in text


# -- the corpus manifest --------------------------------------------------------------------------------
def test_manifest_is_well_formed():
    entries = manifest.files()
    names = [f.name for f in entries]
    assert len(names) == len(set(names))
    for f in entries:
        assert f.set in manifest.sets(), f
        assert f.kind in ("text", "binary") and f.size > 0
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
        assert f.source.startswith(("http://", "https://")), f
        assert f.default_limit is None or 0 < f.default_limit < f.size, f
    assert [f.name for f in manifest.bench_files()] == [
        "alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "html", "urls.10K", "enwik8.head"
    ]
    assert all(f.kind == "text" and f.sha256 for f in manifest.bench_files())
    assert manifest.get("enwik8.head").default_limit == 1_000_000
    assert (manifest.get("enwik8").size, manifest.get("enwik9").size) == (10**8, 10**9)
    assert doctest.testmod(corpora.manifest).failed == 0


def test_manifest_matches_the_corpus_files_at_hand():
    directory = next((d for d in locate.corpus_dirs() if d.is_dir()), None)
    if directory is None:
        if os.environ.get("CI"):
            pytest.fail("no corpus directory: set $NCZIP_CORPORA or provide ../shared/corpora")
        pytest.skip("no corpus directory ($NCZIP_CORPORA or ../shared/corpora)")
    present = sorted(p for p in directory.iterdir() if p.is_file() and p.name != "SHA256SUMS")
    assert present
    for path in present:
        entry = manifest.get(path.name)
        assert entry is not None, f"{path.name} is not in corpora/manifest.json"
        assert path.stat().st_size == entry.size, path.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256, path.name
    sums = directory / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text().splitlines():
            digest, name = line.split()
            assert manifest.get(name).sha256 == digest, name


def test_default_inputs_are_the_text_corpus_with_enwik8_cut_to_1mb(tmp_path, monkeypatch):
    monkeypatch.setenv("NCZIP_CORPORA", str(tmp_path))
    (tmp_path / "html").write_bytes(b"<p>x</p>")
    (tmp_path / "enwik8.head").write_bytes(b"x" * 10)
    monkeypatch.setattr(locate, "REPO_ROOT", tmp_path / "nowhere" / "repo")  # no ../shared/corpora
    found, missing = bench.resolve_inputs([], limit=None)
    assert [(i.name, i.limit) for i in found] == [("html", None), ("enwik8.head", 1_000_000)]
    assert [m.name for m in missing] == ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "urls.10K"]
    found, _ = bench.resolve_inputs([], limit=5000)
    assert [i.limit for i in found] == [5000, 5000]


# -- bench/results.py ---------------------------------------------------------------------------------
def load_results_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "bench" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_names_the_commit_measured_and_only_code_makes_it_dirty(tmp_path, monkeypatch):
    """A run in parts rewrites results.json (and README, the plot) between sittings: those must
    not mark the measured code "-dirty"; any other tracked change must."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    results = load_results_script()

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "bench").mkdir()
    (tmp_path / "docs").mkdir()
    for name in ("bench/results.json", "README.md", "docs/bench.png", "code.py"):
        (tmp_path / name).write_text("0")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    monkeypatch.setattr(results, "ROOT", tmp_path)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    for name in ("bench/results.json", "README.md", "docs/bench.png"):
        (tmp_path / name).write_text("1")
    (tmp_path / "untracked.txt").write_text("1")
    assert results.commit() == head
    (tmp_path / "code.py").write_text("1")
    assert results.commit() == head + "-dirty"


def test_readme_has_the_results_block_and_it_is_replaced_in_place():
    results = load_results_script()
    readme = (ROOT / "README.md").read_text()
    assert readme.count(results.BEGIN) == 1 and readme.count(results.END) == 1
    new = results.replace_block(readme, "| table |\n")
    before, after = readme.split(results.BEGIN)[0], readme.split(results.END)[1]
    assert new == before + results.BEGIN + "\n| table |\n" + results.END + after
    assert results.replace_block(new, "| other |") == before + results.BEGIN + "\n| other |\n" + results.END + after
    with pytest.raises(ValueError):
        results.replace_block("# no markers\n", "x")


def test_results_script_rewrites_readme_and_plot(tiny_gguf, tmp_path):
    """bench/results.py end to end on 200-byte prefixes of the corpus, into a copy of README."""
    needs_tools()
    pytest.importorskip("matplotlib")
    missing = [f.name for f in manifest.bench_files() if locate.find(f.name) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"corpus files not found: {missing}")
        pytest.skip(f"corpus files not found: {missing}")
    results = load_results_script()
    readme, docs = tmp_path / "README.md", tmp_path / "performance.md"
    readme.write_text((ROOT / "README.md").read_text())
    docs.write_text((ROOT / "docs" / "performance.md").read_text())
    command = [sys.executable, ROOT / "bench" / "results.py", "--model", tiny_gguf, "--threads", "1", "--limit", "200",
               "--readme", readme, "--docs", docs, "--plot", tmp_path / "p.png", "--json", tmp_path / "r.json"]
    proc = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    block = readme.read_text().split(results.BEGIN)[1].split(results.END)[0]
    assert f"nczip {__version__}" in block and "the first 200 bytes of each file" in block
    summary = table_rows_markdown(block)  # one row per file: its bpb per compressor
    assert [r[0] for r in summary] == [f.name for f in manifest.bench_files()]
    assert all(float(cell.strip("*")) > 0 for r in summary for cell in r[2:2 + len(results.SUMMARY_TOOLS)])
    assert "](docs/bench.png)" in block
    full = table_rows_markdown(docs.read_text().split(results.BEGIN)[1].split(results.END)[0])
    assert [(r[0], r[2]) for r in full] == [(f.name, t) for f in manifest.bench_files() for t in TOOLS]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert len(json.loads((tmp_path / "r.json").read_text())["rows"]) == len(full)
    outside = lambda text: text.split(results.BEGIN)[0] + text.split(results.END)[1]  # noqa: E731
    assert outside(readme.read_text()) == outside((ROOT / "README.md").read_text())
    assert outside(docs.read_text()) == outside((ROOT / "docs" / "performance.md").read_text())
    # --render rewrites both from the JSON alone, to the same text
    before = readme.read_text(), docs.read_text()
    readme.write_text(results.replace_block(before[0], "stale"))
    docs.write_text(results.replace_block(before[1], "stale"))
    rendered = subprocess.run([*command, "--render"], capture_output=True, text=True, env=child_env(), timeout=600)
    assert rendered.returncode == 0, rendered.stderr
    assert (readme.read_text(), docs.read_text()) == before


def table_rows_markdown(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][2:]  # past header and alignment
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_results_script_measures_the_corpus_in_parts(tiny_gguf, tmp_path):
    """--files measures part of the corpus and --merge folds it into the JSON; README is rewritten
    only once every file is there, naming the run that measured each."""
    needs_tools()
    pytest.importorskip("matplotlib")
    names = [f.name for f in manifest.bench_files()]
    if any(locate.find(n) is None for n in names):
        if os.environ.get("CI"):
            pytest.fail("corpus files not found")
        pytest.skip("corpus files not found")
    results = load_results_script()
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    docs = tmp_path / "performance.md"
    docs.write_text((ROOT / "docs" / "performance.md").read_text())

    def part(files):
        return subprocess.run(
            [sys.executable, ROOT / "bench" / "results.py", "--model", tiny_gguf, "--threads", "1", "--limit", "200",
             "--readme", readme, "--docs", docs, "--plot", tmp_path / "p.png", "--json", tmp_path / "r.json", "--merge",
             "--files", *files],
            capture_output=True, text=True, env=child_env(), timeout=600,
        )

    first = part(names[:2])
    assert first.returncode == 0, first.stderr
    assert "README waits for" in first.stderr and readme.read_text() == original
    again = part(names[:1])  # measured again: replaces its rows, not added twice
    assert again.returncode == 0, again.stderr
    last = part(names[2:])
    assert last.returncode == 0, last.stderr
    report = bench.from_json((tmp_path / "r.json").read_text())
    assert sorted(f.name for f in report.files) == sorted(names)
    assert len(report.rows) == len(names) * len(TOOLS)
    assert [run["files"] for run in report.meta["runs"]] == [names[1:2], names[:1], names[2:]]
    block = readme.read_text().split(results.BEGIN)[1].split(results.END)[0]
    assert sorted({r[0] for r in table_rows_markdown(block)}) == sorted(names)
    # The three parts share a day, a version and a commit: one clause, no file list.
    assert block.count("(commit ") == 1 and f"for {names[1]}" not in block
    bad = part(["no-such-file.txt"])
    assert bad.returncode != 0 and "not in the text corpus" in bad.stderr


def test_measured_when_groups_runs_by_day_version_and_commit():
    results = load_results_script()
    run = lambda day, commit, files: {"date": f"2026-11-{day}T01:00:00+00:00", "nczip_version": "0.1.0",
                                      "commit": commit, "files": files}
    assert results.measured_when([run(29, "a1", ["x"]), run(30, "b2", ["y"]), run(30, "b2", ["z"]),
                                  run(30, "c3", ["w"])]) == (
        "2026-11-29, nczip 0.1.0 (commit a1) for x; 2026-11-30, nczip 0.1.0 (commit b2) for y, z; "
        "2026-11-30, nczip 0.1.0 (commit c3) for w")
    assert results.measured_when([run(30, "b2", ["y"]), run(30, "b2", ["z"])]) == "2026-11-30, nczip 0.1.0 (commit b2)"
    assert results.measured_when([run(30, "b2", None)]) == "2026-11-30, nczip 0.1.0 (commit b2)"
