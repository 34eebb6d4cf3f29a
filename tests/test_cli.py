"""The nczip command line: gzip's habits, exit codes, one-line errors, atomic output.

Process-level behaviour (exit status, what reaches stderr, real pipes and terminals) is checked
through ``python -m nczip`` in a subprocess; the rest calls ``nczip.cli.main`` in-process, which
is much faster.  Every call names the tiny random-weight model (``--model ... --threads 1``):
the real 250 MB default model is never loaded here.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import pty
import re
import select
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

import pytest

from raw_archives import raw_body, raw_header, raw_table
from corpora.samples import edge_cases
from nczip import __version__, cli, container, pipeline
from nczip.api import Compressor, check_header

TEXT = b"The quick brown fox jumps over the lazy dog.\nIt was the best of times.\n"
TMP_SUFFIX = ".nczip-tmp"


class Result(NamedTuple):
    rc: int
    out: bytes
    err: str


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
def model_args(tiny_gguf) -> list[str]:
    return ["--model", str(tiny_gguf), "--threads", "1"]


@pytest.fixture
def archive_of(tiny_gguf):
    """archive_of(data, model=None, route="llm") -> archive bytes, made through the library
    (fast). Route "llm" by default: the tiny model loses to zstd, and "auto" would use zstd."""
    compressors: dict[tuple[str, str], Compressor] = {}

    def make(data: bytes, model: Path | None = None, route: str = "llm") -> bytes:
        key = (str(model or tiny_gguf), route)
        if key not in compressors:
            compressors[key] = Compressor(model=key[0], threads=1, route=route)
        return compressors[key].compress(data)

    yield make
    for c in compressors.values():
        c.close()


@pytest.fixture
def nczip(capsysbinary, monkeypatch):
    """In-process `nczip ARGS`: nczip(*args, stdin=b"") -> Result(rc, stdout bytes, stderr text)."""

    def call(*args, stdin: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsysbinary.readouterr()
        rc = cli.main([str(a) for a in args])
        out, err = capsysbinary.readouterr()
        return Result(rc, out, _without_llama_chatter(err.decode("utf-8", "replace")))

    return call


def _without_llama_chatter(err: str) -> str:
    # In-process only: llama-cpp-python prints a model-loading warning ("llama_kv_cache_iswa: using
    # full-size SWA cache") through Python's sys.stderr, which capsys captures; in a real process
    # it goes to fd 2, which the backend points at /dev/null while loading (the subprocess tests
    # check that stderr stays empty there).
    return re.sub(r"(?m)^llama_[^\n]*\n", "", err)


def run_nczip(*args, input: bytes | None = b"", cwd=None, timeout: float = 120, **kwargs) -> Result:
    """`python -m nczip ARGS` in a real process."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run(
        [sys.executable, "-m", "nczip", *map(str, args)], input=input, cwd=cwd, timeout=timeout, **kwargs
    )
    return Result(proc.returncode, proc.stdout, (proc.stderr or b"").decode("utf-8", "replace"))


def assert_error_line(err: str, *needles: str) -> str:
    """stderr is exactly one line, `nczip: ...`, no traceback, mentioning each needle."""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("nczip: "), lines[0]
    assert "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def listing(directory: Path) -> dict[str, bytes]:
    """Every file in `directory` (hidden ones too) with its contents."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def assert_no_temp_files(directory: Path) -> None:
    leftovers = [name for name in os.listdir(directory) if name.endswith(TMP_SUFFIX)]
    assert not leftovers, leftovers


# -- help, version, usage --------------------------------------------------------------------------
def test_help(nczip):
    for args in (["--help"], ["-h"], ["compress", "--help"], ["decompress", "--help"], ["-d", "--help"]):
        r = nczip(*args)
        assert r.rc == 0, (args, r)
        assert b"Usage:" in r.out
    assert b"nczip -d FILE.ncz" in nczip("--help").out  # the gzip forms are shown, not only the commands


def test_version_and_unknown_option_in_a_process():
    r = run_nczip("--version")
    assert r.rc == 0 and __version__ in r.out.decode()
    for args in (["--bogus"], ["compress", "--bogus"], ["-d", "--bogus"], ["info"]):
        r = run_nczip(*args)
        assert r.rc == 2, (args, r)
        assert_error_line(r.err)
        assert r.out == b""


@pytest.mark.parametrize(
    "args",
    [["-o", "x.ncz", "a", "b"], ["-c", "-o", "x.ncz", "a"], ["--threads", "0"], ["--window", "1"],
     ["--backend", "torch", "--slide", "shift", "a"], ["--device", "cpu", "a"], ["-d", "--device", "cpu", "a.ncz"],
     ["test", "--device", "cpu", "a.ncz"]],
    ids=["o-two-inputs", "o-and-c", "bad-threads", "bad-window", "torch-cannot-shift", "device-without-torch",
         "decompress-device-without-torch", "test-device-without-torch"],
)
def test_usage_errors_exit_2(nczip, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b", "a.ncz"):
        (tmp_path / name).write_bytes(TEXT)
    before = listing(tmp_path)
    r = nczip(*args)
    assert r.rc == 2, r
    assert_error_line(r.err)
    assert listing(tmp_path) == before


# -- round trips through real pipes ----------------------------------------------------------------
PIPE_CASES = ["empty", "one_byte", "invalid_utf8", "all_byte_values", "crlf"]


@pytest.mark.parametrize("name", PIPE_CASES)
def test_pipe_round_trip(model_args, name):
    data = edge_cases()[name]
    packed = run_nczip(*model_args, input=data)  # no subcommand: stdin -> stdout
    assert packed.rc == 0 and packed.err == "", packed.err
    assert container.is_archive(packed.out)
    unpacked = run_nczip("-d", *model_args, input=packed.out)
    assert unpacked.rc == 0 and unpacked.err == "", unpacked.err
    assert unpacked.out == data


def test_llm_only_leaves_out_the_ensemble(nczip, model_args):
    data = TEXT * 3
    default = nczip(*model_args, "-c", "--route", "llm", stdin=data)
    plain = nczip(*model_args, "-c", "--llm-only", "--route", "llm", stdin=data)
    assert default.rc == 0 and plain.rc == 0
    assert check_header(container.read_header(default.out)[0]).ensemble is not None
    assert check_header(container.read_header(plain.out)[0]).ensemble is None
    for archive in (default.out, plain.out):  # the decoder follows the header either way
        assert nczip("-d", *model_args, stdin=archive).out == data


@pytest.mark.parametrize("flags, level", [((), 6), (("-1",), 1), (("-9",), 9), (("--fast",), 1), (("--best",), 9),
                                          (("-3c",), 3), (("-c5",), 5), (("--level", "7"), 7), (("compress", "-2"), 2)])
def test_levels_as_gzip_spells_them(nczip, model_args, flags, level):
    """-1 (fastest) .. -9 (smallest), alone or in a cluster, --fast, --best: a level is one codec
    preset in the header."""
    data = TEXT * 2
    out = nczip(*flags, *model_args, "-c", "--route", "llm", stdin=data)
    assert out.rc == 0, out
    assert container.read_header(out.out)[0].params["codec"] == 10 + level
    assert nczip("-d", *model_args, stdin=out.out).out == data


def test_stdin_named_dash(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)  # a broken `-o -` would write a file named "-" here
    packed = nczip("compress", *model_args, "-", stdin=TEXT)
    assert packed.rc == 0
    assert nczip("decompress", *model_args, "-", stdin=packed.out).out == TEXT
    assert nczip("-d", *model_args, stdin=packed.out).out == TEXT
    assert nczip(*model_args, "-o", "-", stdin=TEXT).out == packed.out  # -o - is stdout too
    assert os.listdir(tmp_path) == []


# -- files: gzip forms and subcommands -------------------------------------------------------------
def test_gzip_forms_on_files_in_a_process(tmp_path, model_args):
    src = tmp_path / "notes.txt"
    src.write_bytes(TEXT)

    r = run_nczip(*model_args, "notes.txt", cwd=tmp_path)  # `nczip --model M FILE`
    assert r.rc == 0 and r.err == "" and r.out == b"", r
    assert not src.exists()
    packed = (tmp_path / "notes.txt.ncz").read_bytes()

    r = run_nczip("-dc", *model_args, "notes.txt.ncz", cwd=tmp_path)  # `nczip -dc FILE.ncz`
    assert r.rc == 0 and r.out == TEXT
    assert (tmp_path / "notes.txt.ncz").exists()

    r = run_nczip("-d", *model_args, "notes.txt.ncz", cwd=tmp_path)  # `nczip -d FILE.ncz`
    assert r.rc == 0 and r.err == "" and r.out == b""
    assert src.read_bytes() == TEXT
    assert not (tmp_path / "notes.txt.ncz").exists()
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]

    r = run_nczip(*model_args, input=TEXT)  # the filter form gives the same archive
    assert r.out == packed


@pytest.mark.parametrize(
    "decompress",
    [["-d"], ["--decompress"], ["--uncompress"], ["-d", "-k"], ["-kd"], ["decompress"]],
    ids=lambda a: " ".join(a),
)
def test_decompress_spellings(nczip, tmp_path, monkeypatch, model_args, archive_of, decompress):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.txt.ncz").write_bytes(archive_of(TEXT))
    args = [*decompress, *model_args, "f.txt.ncz"] if decompress[0] == "decompress" else [*model_args, *decompress, "f.txt.ncz"]
    r = nczip(*args)
    assert r.rc == 0, r
    assert (tmp_path / "f.txt").read_bytes() == TEXT
    kept = "-k" in decompress or "-kd" in decompress
    assert (tmp_path / "f.txt.ncz").exists() == kept


@pytest.mark.parametrize("spelling", [["test"], ["-t"], ["--test"], ["-tv"], ["-dt"], ["-t", "-q"]], ids=" ".join)
def test_gzip_test_spellings(nczip, tmp_path, monkeypatch, model_args, archive_of, spelling):
    monkeypatch.chdir(tmp_path)
    Path("f.txt.ncz").write_bytes(archive_of(TEXT))
    Path("bad.ncz").write_bytes(archive_of(TEXT)[:-1])
    r = nczip(*spelling, *model_args, "f.txt.ncz")
    assert r.rc == 0, r
    assert r.out == b"" and sorted(os.listdir()) == ["bad.ncz", "f.txt.ncz"]  # writes nothing
    assert ("f.txt.ncz: OK" in r.err) == ("-q" not in spelling)
    assert ("bpb" in r.err) == (spelling == ["-tv"])
    bad = nczip(*spelling, *model_args, "bad.ncz")
    assert bad.rc == 1 and "bad.ncz" in bad.err


@pytest.mark.parametrize("spelling", [["info"], ["-l"], ["--list"]], ids=" ".join)
def test_gzip_list_spellings(nczip, tmp_path, monkeypatch, archive_of, spelling):
    monkeypatch.chdir(tmp_path)
    Path("f.txt.ncz").write_bytes(archive_of(TEXT))
    r = nczip(*spelling, "f.txt.ncz")
    assert r.rc == 0, r
    assert re.search(rb"original size: +%d bytes" % len(TEXT), r.out)


def test_an_output_name_is_not_read_as_flags(nczip, tmp_path, monkeypatch, model_args):
    """-o takes a value: `-otld` names the output file tld, it does not ask for test, list or -d."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    r = nczip(*model_args, "-k", "-otld", "a.txt")
    assert r.rc == 0, r
    assert Path("tld").read_bytes()[:4] == container.MAGIC


def test_subcommands_keep_stdout_output(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)

    r = nczip("compress", "-k", *model_args, "a.txt")
    assert r.rc == 0 and r.err == ""
    assert Path("a.txt").read_bytes() == TEXT
    archive = Path("a.txt.ncz").read_bytes()

    r = nczip("compress", "-c", *model_args, "a.txt")  # -c: stdout, input kept
    assert r.rc == 0 and r.out == archive
    assert Path("a.txt").exists()

    r = nczip("compress", *model_args, "-o", "custom.bin", "a.txt")
    assert r.rc == 0 and Path("custom.bin").read_bytes() == archive
    assert not Path("a.txt").exists()  # -o without -k: the input goes, like FILE.ncz

    r = nczip("decompress", *model_args, "-o", "back.txt", "-k", "custom.bin")  # any suffix with -o
    assert r.rc == 0 and Path("back.txt").read_bytes() == TEXT
    assert Path("custom.bin").exists()

    r = nczip("decompress", *model_args, "-c", "a.txt.ncz")
    assert r.rc == 0 and r.out == TEXT and Path("a.txt.ncz").exists()

    r = nczip("decompress", *model_args, "custom.bin")  # no .ncz suffix and no -o/-c: refused
    assert r.rc == 1
    assert_error_line(r.err, "custom.bin", "suffix")
    assert Path("custom.bin").exists()
    assert_no_temp_files(tmp_path)


# -- refusals --------------------------------------------------------------------------------------
def test_existing_output_is_not_overwritten_without_force(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    Path("a.txt.ncz").write_bytes(b"precious")
    r = nczip(*model_args, "a.txt")
    assert r.rc == 1
    assert_error_line(r.err, "a.txt.ncz", "exists")
    assert Path("a.txt.ncz").read_bytes() == b"precious" and Path("a.txt").read_bytes() == TEXT

    r = nczip(*model_args, "-f", "a.txt")
    assert r.rc == 0 and not Path("a.txt").exists()
    assert Path("a.txt.ncz").read_bytes() == archive_of(TEXT, route="auto")

    Path("a.txt").write_bytes(b"precious too")  # decompress: the same rule
    r = nczip("-d", *model_args, "a.txt.ncz")
    assert r.rc == 1
    assert_error_line(r.err, "a.txt", "exists")
    assert Path("a.txt").read_bytes() == b"precious too" and Path("a.txt.ncz").exists()

    r = nczip("-d", "-f", *model_args, "a.txt.ncz")
    assert r.rc == 0 and Path("a.txt").read_bytes() == TEXT and not Path("a.txt.ncz").exists()
    assert_no_temp_files(tmp_path)


def test_ncz_input_is_not_recompressed_without_force(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    archive = archive_of(TEXT)
    Path("a.ncz").write_bytes(archive)
    r = nczip(*model_args, "a.ncz")
    assert r.rc == 1
    assert_error_line(r.err, "a.ncz", ".ncz")
    assert listing(tmp_path) == {"a.ncz": archive}

    r = nczip(*model_args, "-f", "-k", "a.ncz")
    assert r.rc == 0 and Path("a.ncz.ncz").exists() and Path("a.ncz").exists()


def test_output_same_as_input_is_refused_even_with_force(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    r = nczip(*model_args, "-f", "-o", "a.txt", "a.txt")
    assert r.rc == 1
    assert_error_line(r.err, "same file")
    assert listing(tmp_path) == {"a.txt": TEXT}

    Path("b.ncz").write_bytes(archive_of(TEXT))
    r = nczip("-d", "-f", *model_args, "-o", "./b.ncz", "b.ncz")
    assert r.rc == 1
    assert Path("b.ncz").read_bytes() == archive_of(TEXT)


def test_output_directory_is_refused(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    Path("a.txt.ncz").mkdir()
    for force in ([], ["-f"]):
        r = nczip(*model_args, *force, "a.txt")
        assert r.rc == 1
        assert_error_line(r.err, "directory")
        assert Path("a.txt.ncz").is_dir() and Path("a.txt").read_bytes() == TEXT


# -- errors: one line, exit 1, nothing written, input kept -----------------------------------------
def _damaged_inputs(archive: bytes, other_archive: bytes) -> dict[str, tuple[str, bytes | None, tuple[str, ...]]]:
    flipped = bytearray(archive)
    flipped[len(flipped) // 2] ^= 0x10
    return {
        # name: (file name, contents or None for "missing" / directory, words the message must hold)
        "missing": ("gone.ncz", None, ("gone.ncz",)),
        "directory": ("dir.ncz", b"<dir>", ("dir.ncz", "directory")),
        "truncated": ("cut.ncz", archive[: len(archive) - 7], ("cut.ncz",)),
        "corrupt": ("flip.ncz", bytes(flipped), ("flip.ncz",)),
        "not_an_archive": ("plain.ncz", TEXT, ("plain.ncz",)),
        "empty_file": ("zero.ncz", b"", ("zero.ncz",)),
        "other_model": ("other.ncz", other_archive, ("other.ncz",)),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "truncated", "corrupt", "not_an_archive", "empty_file", "other_model"]
)
def test_decompress_errors_in_a_process(tmp_path, model_args, archive_of, tiny_gguf_other, case):
    name, contents, needles = _damaged_inputs(archive_of(TEXT), archive_of(TEXT, model=tiny_gguf_other))[case]
    path = tmp_path / name
    if contents == b"<dir>":
        path.mkdir()
    elif contents is not None:
        path.write_bytes(contents)
    before = listing(tmp_path)

    r = run_nczip("-d", *model_args, name, cwd=tmp_path)

    assert r.rc == 1, r
    line = assert_error_line(r.err, *needles)
    assert r.out == b""
    assert listing(tmp_path) == before  # no output file, input kept, no temporary file
    assert path.exists() == (contents is not None)
    if case == "other_model":
        # The message names the model the archive needs, by file name and SHA-256.
        other_sha = hashlib.sha256(Path(tiny_gguf_other).read_bytes()).hexdigest()
        assert Path(tiny_gguf_other).name in line and other_sha in line


def test_every_flipped_byte_is_one_error_line(nczip, tmp_path, monkeypatch, model_args, archive_of):
    """In-process sweep: flip one bit at many offsets; never a traceback, never an output file."""
    monkeypatch.chdir(tmp_path)
    archive = archive_of(TEXT)
    for offset in range(0, len(archive), 3):
        damaged = bytearray(archive)
        damaged[offset] ^= 1 << (offset % 8)
        Path("x.ncz").write_bytes(bytes(damaged))
        r = nczip("-d", *model_args, "x.ncz")
        assert r.rc == 1, (offset, r)
        assert_error_line(r.err, "x.ncz")
        assert sorted(os.listdir(tmp_path)) == ["x.ncz"], offset


def test_test_and_info_report_damage(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    archive = archive_of(TEXT)
    damaged = bytearray(archive)
    damaged[-1] ^= 0x40
    Path("bad.ncz").write_bytes(bytes(damaged))
    Path("cut.ncz").write_bytes(archive[:20])
    for cmd in (["test", *model_args], ["info"]):
        r = nczip(*cmd, "cut.ncz")
        assert r.rc == 1
        assert_error_line(r.err, "cut.ncz")
    r = nczip("test", *model_args, "bad.ncz")
    assert r.rc == 1
    assert_error_line(r.err, "bad.ncz")
    r = nczip("info", "bad.ncz")  # the header is intact: info shows the table and marks the segment
    assert b"DAMAGED" in r.out
    assert r.rc == 1
    assert r.err.strip() == "nczip: bad.ncz: segment 1 of 1 damaged (CRC-32 mismatch)"
    assert sorted(os.listdir(tmp_path)) == ["bad.ncz", "cut.ncz"]


def test_missing_file_and_directory_on_compress(tmp_path, model_args):
    (tmp_path / "adir").mkdir()
    for name, needle in (("nothere.txt", "nothere.txt"), ("adir", "directory")):
        r = run_nczip(*model_args, name, cwd=tmp_path)
        assert r.rc == 1
        assert_error_line(r.err, name, needle)
    assert sorted(os.listdir(tmp_path)) == ["adir"]


def test_symlink_is_refused_without_force(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("real.txt").write_bytes(TEXT)
    os.symlink("real.txt", "link.txt")
    r = nczip(*model_args, "link.txt")
    assert r.rc == 1
    assert r.err.strip() == "nczip: link.txt: is a symbolic link -- ignored (use -f to follow it)"
    assert os.path.islink("link.txt") and not os.path.exists("link.txt.ncz")
    # With -f the link is followed like gzip -f: its target's bytes are compressed.
    r = nczip(*model_args, "-f", "-k", "link.txt")
    assert r.rc == 0
    assert Compressor(model=model_args[1], threads=1).decompress(Path("link.txt.ncz").read_bytes()) == TEXT


def test_missing_model_is_one_line(nczip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    r = nczip("--model", tmp_path / "no-such.gguf", "--threads", "1", "a.txt")
    assert r.rc == 1
    assert_error_line(r.err, "no-such.gguf")
    Path("junk.gguf").write_bytes(b"GGUF but not really")
    r = nczip("--model", "junk.gguf", "--threads", "1", "a.txt")
    assert r.rc == 1
    assert_error_line(r.err, "junk.gguf")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "junk.gguf"]


def test_multiple_files_go_on_after_a_failure(tmp_path, model_args):
    for name in ("one.txt", "three.txt"):
        (tmp_path / name).write_bytes(TEXT + name.encode())
    (tmp_path / "four.txt.ncz").write_bytes(b"already here")
    r = run_nczip(*model_args, "one.txt", "two.txt", "three.txt", "four.txt", cwd=tmp_path)
    assert r.rc == 1
    lines = r.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("nczip: ") for line in lines), r.err
    assert "two.txt" in lines[0] and "four.txt" in lines[1]
    assert sorted(os.listdir(tmp_path)) == ["four.txt.ncz", "one.txt.ncz", "three.txt.ncz"]
    assert (tmp_path / "four.txt.ncz").read_bytes() == b"already here"


# -- the input goes only once the output is complete -----------------------------------------------
def test_compress_verifies_before_deleting(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    calls = []
    real = Compressor.iter_decompress

    def spy(self, data, **kw):
        calls.append(len(data))
        return real(self, data, **kw)

    monkeypatch.setattr(Compressor, "iter_decompress", spy)
    assert nczip(*model_args, "-k", "a.txt").rc == 0
    assert calls == []  # input kept: no need to verify
    assert nczip(*model_args, "-f", "a.txt").rc == 0
    assert len(calls) == 1  # input deleted: verified first
    assert not Path("a.txt").exists()

    # A decoder that disagrees with the encoder (the right length, other bytes): the input must
    # stay and no archive appear.
    Path("b.txt").write_bytes(TEXT)
    monkeypatch.setattr(pipeline, "decode_segment", lambda slot, *a, **kw: bytes(a[5]))
    r = nczip(*model_args, "b.txt")
    assert r.rc == 1
    assert_error_line(r.err, "b.txt", "verif")
    assert Path("b.txt").read_bytes() == TEXT and not Path("b.txt.ncz").exists()
    assert nczip(*model_args, "--no-verify", "b.txt").rc == 0  # the user may skip the check


def test_failed_write_keeps_input_and_leaves_no_temp_file(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)
    Path("b.ncz").write_bytes(archive_of(TEXT))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)  # the temporary file is written, then the disk fills
    before = listing(tmp_path)
    for args in ([*model_args, "a.txt"], ["-d", *model_args, "b.ncz"]):
        r = nczip(*args)
        assert r.rc == 1
        assert_error_line(r.err, os.strerror(errno.ENOSPC))
        assert listing(tmp_path) == before

    r = nczip(*model_args, "-o", "no/such/dir/a.ncz", "a.txt")  # an unwritable target is named
    assert r.rc == 1
    assert_error_line(r.err, "no/such/dir/a.ncz")
    assert listing(tmp_path) == before


# -- metadata, determinism -------------------------------------------------------------------------
def test_mode_and_mtime_are_carried(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    src = Path("a.txt")
    src.write_bytes(TEXT)
    os.chmod(src, 0o640)
    mtime_ns = 1_500_000_000_123_456_789
    os.utime(src, ns=(mtime_ns, mtime_ns))

    assert nczip(*model_args, "a.txt").rc == 0
    st = os.stat("a.txt.ncz")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == mtime_ns

    assert nczip("-d", *model_args, "a.txt.ncz").rc == 0
    st = os.stat("a.txt")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == mtime_ns


def test_output_from_stdin_gets_umask_mode(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o027)
    try:
        assert nczip(*model_args, "-o", "s.ncz", stdin=TEXT).rc == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("s.ncz").st_mode) == 0o640  # not mkstemp's 0600


def test_deterministic_and_thread_independent(nczip, tmp_path, monkeypatch, tiny_gguf):
    data = edge_cases()["multilingual_utf8"] + TEXT
    one = nczip("--model", tiny_gguf, "--threads", "1", stdin=data).out
    two = nczip("--model", tiny_gguf, "--threads", "1", stdin=data).out
    assert one == two and container.is_archive(one)
    # Short on purpose: with more threads than free cores (a loaded CI box), llama.cpp's thread
    # handoffs make each token cost up to a second.
    short = b"The fox \xc3\xa9"
    packed = nczip("--model", tiny_gguf, "--threads", "1", stdin=short).out
    r = nczip("-d", "--model", tiny_gguf, "--threads", "2", stdin=packed)
    assert r.rc == 0 and r.out == short


# -- messages --------------------------------------------------------------------------------------
def test_verbose_and_quiet(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)

    r = nczip(*model_args, "-v", "-k", "a.txt")
    assert r.rc == 0
    lines = r.err.splitlines()
    assert len(lines) == 1 and "a.txt" in lines[0] and "bpb" in lines[0], r.err
    r = nczip("-d", "-v", "-c", *model_args, "a.txt.ncz")
    assert r.rc == 0 and r.out == TEXT and "bpb" in r.err

    r = nczip(*model_args, "-vv", stdin=TEXT)
    assert "ideal" in r.err

    for args in (
        [*model_args, "-q", "-f", "a.txt"],
        ["-d", "-q", "-c", *model_args, "a.txt.ncz"],
        ["test", "-q", *model_args, "a.txt.ncz"],
    ):
        r = nczip(*args)
        assert r.rc == 0 and r.err == "", (args, r.err)

    r = nczip("-q", *model_args, "missing.txt")  # -q silences chatter, not errors
    assert r.rc == 1
    assert_error_line(r.err, "missing.txt")


def test_info_prints_header_and_segments(nczip, tmp_path, monkeypatch, archive_of, tiny_gguf):
    monkeypatch.chdir(tmp_path)
    Path("a.ncz").write_bytes(archive_of(TEXT))
    Path("e.ncz").write_bytes(archive_of(b""))
    r = nczip("info", "a.ncz", "e.ncz")
    assert r.rc == 0, r
    text = r.out.decode()
    sha = hashlib.sha256(Path(tiny_gguf).read_bytes()).hexdigest()
    assert Path(tiny_gguf).name in text and sha in text
    assert hashlib.sha256(TEXT).hexdigest() in text
    assert f"{len(TEXT)} bytes" in text
    assert "segments:" in text and "LLM" in text and "codec=16" in text  # level 6, the default
    assert text.count("archive:") == 2
    for line in text.splitlines():
        if ":" in line and not line.startswith(" "):
            label, _, value = line.partition(":")
            assert value.startswith(" "), line  # every label separated from its value
    assert sorted(os.listdir(tmp_path)) == ["a.ncz", "e.ncz"]


def test_test_command_writes_nothing(nczip, tmp_path, monkeypatch, model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    Path("a.ncz").write_bytes(archive_of(TEXT))
    r = nczip("test", *model_args, "a.ncz")
    assert r.rc == 0 and r.out == b"" and "OK" in r.err
    assert sorted(os.listdir(tmp_path)) == ["a.ncz"]
    r = nczip("test", *model_args, stdin=archive_of(TEXT))
    assert r.rc == 0 and r.out == b""


# -- terminals and pipes ---------------------------------------------------------------------------
def _drain(fd: int) -> bytes:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_terminal_refusals(tmp_path, model_args, archive_of):
    (tmp_path / "a.ncz").write_bytes(archive_of(TEXT))
    master, slave = pty.openpty()
    try:
        # Compressed data is not written to a terminal ...
        r = run_nczip(*model_args, input=TEXT, stdout=slave, stderr=subprocess.PIPE)
        assert r.rc == 1
        assert_error_line(r.err, "terminal")
        assert _drain(master) == b""
        # ... unless forced,
        r = run_nczip(*model_args, "-f", input=TEXT, stdout=slave, stderr=subprocess.PIPE)
        assert r.rc == 0, r.err
        assert _drain(master) != b""
        # decompressed text may go to a terminal,
        r = run_nczip("-dc", *model_args, "a.ncz", cwd=tmp_path, input=None, stdout=slave, stderr=subprocess.PIPE)
        assert r.rc == 0, r.err
        assert b"quick brown fox" in _drain(master)
        # and compressed data is not read from a terminal (it would wait for keystrokes).
        r = run_nczip("-d", *model_args, input=None, stdin=slave, timeout=30)
        assert r.rc == 1
        assert_error_line(r.err, "terminal")
    finally:
        os.close(slave)
        os.close(master)


def test_closed_stdout_is_quiet(tmp_path, model_args, archive_of):
    (tmp_path / "a.ncz").write_bytes(archive_of(TEXT))
    (tmp_path / "b.ncz").write_bytes(archive_of(TEXT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nczip", "-dc", *model_args, "a.ncz", "b.ncz"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `nczip -dc ... | head` once head is done
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "Exception ignored" not in err
    assert len(err.splitlines()) <= 1
    assert sorted(os.listdir(tmp_path)) == ["a.ncz", "b.ncz"]


class _FakeTerminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


def test_progress_line_only_on_a_terminal(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT * 5)
    r = nczip(*model_args, "-k", "a.txt")  # stderr is not a terminal: no progress line
    assert r.rc == 0 and r.err == ""

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", _FakeTerminal(raw, write_through=True))
    assert cli.main([*model_args, "-f", "-k", "a.txt"]) == 0
    shown = _without_llama_chatter(raw.getvalue().decode())
    assert "a.txt: compressing" in shown and "bytes" in shown
    assert shown.endswith("\r\x1b[K")  # the line is erased at the end
    raw.seek(0), raw.truncate()
    assert cli.main([*model_args, "-d", "-c", "a.txt.ncz"]) == 0
    assert "decompressing" in _without_llama_chatter(raw.getvalue().decode())
    raw.seek(0), raw.truncate()
    assert cli.main([*model_args, "-q", "-f", "-k", "a.txt"]) == 0
    assert _without_llama_chatter(raw.getvalue().decode()) == ""  # -q: not even the progress line
    assert cli.main([*model_args, "-f", "a.txt"]) == 0  # the input goes: the archive is verified first
    assert "a.txt: verifying" in raw.getvalue().decode()


@pytest.mark.parametrize("where", ["compress", "write"])
def test_interrupt_leaves_nothing_behind(nczip, tmp_path, monkeypatch, model_args, where):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_bytes(TEXT)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "compress":
        monkeypatch.setattr(Compressor, "archive_builder", interrupt)
    else:
        monkeypatch.setattr(os, "fsync", interrupt)  # Ctrl-C (or SIGTERM) while the file is written
    r = nczip(*model_args, "a.txt")
    assert r.rc == 130
    assert [line for line in r.err.splitlines() if line] == ["nczip: interrupted"]
    assert listing(tmp_path) == {"a.txt": TEXT}


def test_sigterm_in_a_real_process_leaves_nothing_behind(tmp_path, model_args):
    """`kill PID` in the middle of compressing: exit 143 (128 + SIGTERM) with one line, the
    input intact, no output and no temporary file."""
    import signal
    import time

    data = TEXT * (2_000_000 // len(TEXT))  # far longer than the 3 s before the signal comes
    (tmp_path / "big.txt").write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nczip", *model_args, "--window", "64", "big.txt"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    time.sleep(3.0)  # past start-up and model loading, into the coding loop
    assert proc.poll() is None, "compression finished before the signal: make the input longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert _without_llama_chatter(err.decode()) == "nczip: terminated\n"
    assert listing(tmp_path) == {"big.txt": data}


def _peak_rss_mib(args: list[str], cwd: Path, stdout_to: Path | None = None) -> float:
    """Run the CLI in a fresh interpreter; its peak RSS in MiB. VmHWM, not getrusage: Linux's
    ru_maxrss keeps the forked parent's RSS from before the exec. The figure goes to stderr,
    so that standard output can carry nczip's own output (into `stdout_to`)."""
    code = (
        "import sys\n"
        "from nczip.cli import main\n"
        f"rc = main({args!r})\n"
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
        "print(hwm, rc, file=sys.stderr)\n"
    )
    with open(stdout_to or os.devnull, "wb") as out:
        done = subprocess.run([sys.executable, "-c", code], cwd=cwd, stdout=out, stderr=subprocess.PIPE,
                              text=True, timeout=600)
    kib, rc = done.stderr.split()[-2:]
    assert rc == "0", done.stderr
    return int(kib) / 1024


def test_memory_follows_the_segment_not_the_input(tmp_path):
    """Compress and decompress read and write one 1 MiB segment at a time: 64 MiB of input
    costs about what 4 MiB does (before, the CLI held the whole input and the whole output)."""
    block = b"\x00\x01\x02\x03" * 64 + bytes(768)  # binary: no model; zstd shrinks it to nothing
    peaks = {}
    for mib in (4, 64):
        name = f"in{mib}.bin"
        (tmp_path / name).write_bytes(block * (mib * 1024))
        compress = _peak_rss_mib(["compress", "-k", name], tmp_path)
        (tmp_path / name).rename(tmp_path / f"orig{mib}.bin")
        decompress = _peak_rss_mib(["decompress", "-k", name + ".ncz"], tmp_path)
        assert (tmp_path / name).read_bytes() == (tmp_path / f"orig{mib}.bin").read_bytes()
        piped = _peak_rss_mib(["decompress", "-c", name + ".ncz"], tmp_path, stdout_to=tmp_path / "piped.bin")
        assert (tmp_path / "piped.bin").read_bytes() == (tmp_path / f"orig{mib}.bin").read_bytes()
        peaks[mib] = (compress, decompress, piped)
    for i, what in enumerate(("compress", "decompress", "decompress -c")):
        assert peaks[64][i] - peaks[4][i] < 16, (what, peaks)


def _four_segment_archive(nczip, tmp_path, monkeypatch, model_args) -> bytes:
    """a.bin (random then zeros: four segments, no model needed) and a.bin.ncz, in tmp_path,
    which becomes the working directory; returns a.bin's bytes."""
    monkeypatch.chdir(tmp_path)
    data = os.urandom(1 << 20) + b"\x00" * (3 << 20)
    Path("a.bin").write_bytes(data)
    assert nczip(*model_args, "-k", "a.bin").rc == 0
    return data


def _flip_a_bit_of_the_last_segment(monkeypatch) -> None:
    """Decoding gives the last segment with one bit off: only the final SHA-256 sees it."""
    real = pipeline.decode_segment

    def last_one_wrong(slot, header, params, index, count, *rest, **kw):
        part = real(slot, header, params, index, count, *rest, **kw)
        if index == count - 1:
            part = bytes([part[0] ^ 1]) + part[1:]
        return part

    monkeypatch.setattr(pipeline, "decode_segment", last_one_wrong)


def test_stdout_gets_checked_segments_and_a_late_failure_says_so(nczip, tmp_path, monkeypatch, model_args):
    """-c writes each segment once it has decoded and passed its own checks (as gzip and zstd
    stream), the last one only after the final size and SHA-256: when that fails, exit 1 and
    say how much already went out (every segment but the last)."""
    data = _four_segment_archive(nczip, tmp_path, monkeypatch, model_args)
    assert nczip(*model_args, "-dc", "a.bin.ncz").out == data
    _flip_a_bit_of_the_last_segment(monkeypatch)
    r = nczip(*model_args, "-dc", "a.bin.ncz")
    assert r.rc == 1
    written = len(data) - (1 << 20)
    assert_error_line(r.err, "a.bin.ncz", "does not match", f"{written} bytes already written")
    assert r.out == data[:written]


def test_a_file_output_that_fails_its_check_leaves_nothing(nczip, tmp_path, monkeypatch, model_args):
    """Decoding to a file writes segments as they come, into a temporary file that is removed
    when the final size and SHA-256 check fails: no output, no temporary file."""
    _four_segment_archive(nczip, tmp_path, monkeypatch, model_args)
    Path("a.bin").unlink()
    _flip_a_bit_of_the_last_segment(monkeypatch)
    r = nczip(*model_args, "-d", "a.bin.ncz")
    assert r.rc == 1
    assert_error_line(r.err, "a.bin.ncz", "does not match")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin.ncz"]


def _in_the_general_form(archive: bytes) -> bytes:
    """The same one-LLM-segment archive in the general form, as nczip wrote it before the
    LLM_SINGLE form existed: raw_archives' struct builders, not nczip's writer."""
    header, (segment,) = (parsed := container.read_archive(archive)).header, parsed.segments
    body = raw_body(backend=header.backend.encode("ascii"), name=header.model_name.encode("utf-8"),
                    model=header.model_sha256, size=header.original_size, sha=header.original_sha256,
                    params=[(key.encode("ascii"), value) for key, value in header.params.items()])
    record = (1, segment.original_size, segment.token_count, len(segment.payload), zlib.crc32(segment.payload))
    return raw_header(body) + raw_table([record]) + segment.payload


def test_text_takes_the_llm_single_form_and_older_general_archives_still_decode(nczip, tmp_path, monkeypatch,
                                                                                 model_args, archive_of):
    monkeypatch.chdir(tmp_path)
    data = b"One text segment, coded by the model, in the compact header form. " * 6
    archive = archive_of(data)
    assert struct.unpack_from("<H", archive, 6)[0] == container.FLAG_LLM_SINGLE
    older = _in_the_general_form(archive)
    assert len(older) - len(archive) >= 50
    for name, blob in (("new.ncz", archive), ("old.ncz", older)):
        Path(name).write_bytes(blob)
        assert nczip(*model_args, "-dc", name).out == data, name  # streams: container.read_prefix
        assert nczip("test", *model_args, name).rc == 0, name
        info = nczip("info", name)
        assert info.rc == 0 and re.search(rb"original size: +%d bytes" % len(data), info.out), name


def test_the_wrong_model_is_refused_before_a_byte_even_after_a_segment_that_needs_none(
        nczip, tmp_path, monkeypatch, model_args, archive_of, tiny_gguf_other):
    """A stored segment first, an LLM segment second: with another model, -dc writes nothing."""
    monkeypatch.chdir(tmp_path)
    coded = container.read_archive(archive_of(TEXT))
    head = b"\x00\xff bytes that need no model \x01" * 4
    header = dataclasses.replace(coded.header, original_size=len(head) + len(TEXT),
                                 original_sha256=hashlib.sha256(head + TEXT).digest())
    mixed = container.Archive(header, (container.Segment(container.Method.STORED, len(head), 0, head), *coded.segments))
    Path("m.ncz").write_bytes(container.write_archive(mixed))
    assert nczip(*model_args, "-dc", "m.ncz").out == head + TEXT
    for command in (["-dc"], ["test"]):
        r = nczip(*command, "--model", str(tiny_gguf_other), "--threads", "1", "m.ncz")
        assert r.rc == 1 and r.out == b"", r
        assert_error_line(r.err, "m.ncz", "needs model")
        assert "already written" not in r.err


def test_recursive_goes_into_directories(nczip, tmp_path, monkeypatch, model_args):
    """-r: every regular file below a directory, like gzip -r; .ncz files are left alone when
    compressing, and only they are decompressed; symbolic links are not followed."""
    monkeypatch.chdir(tmp_path)
    texts = {"d/a.txt": TEXT, "d/sub/b.txt": TEXT[::-1], "top.txt": TEXT[:100]}
    for name, data in texts.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(data)
    Path("d/old.ncz").write_bytes(b"not compressed again")
    Path("outside.txt").write_bytes(TEXT)
    os.symlink(tmp_path / "outside.txt", "d/link.txt")
    r = nczip(*model_args, "-r", "d", "top.txt")
    assert r.rc == 0, r
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()) == [
        "d/a.txt.ncz", "d/old.ncz", "d/sub/b.txt.ncz", "outside.txt", "top.txt.ncz"]
    assert Path("d/old.ncz").read_bytes() == b"not compressed again"
    Path("d/old.ncz").unlink()
    r = nczip(*model_args, "-dr", "d")  # a cluster with -d, like gzip -dr
    assert r.rc == 0, r
    for name, data in texts.items():
        assert Path(name).read_bytes() == data if name != "top.txt" else Path("top.txt.ncz").exists()
    assert not list(Path("d").rglob("*.ncz"))


def test_without_recursive_a_directory_is_still_refused(nczip, tmp_path, monkeypatch, model_args):
    monkeypatch.chdir(tmp_path)
    Path("d").mkdir()
    (Path("d") / "a.txt").write_bytes(TEXT)
    r = nczip(*model_args, "d")
    assert r.rc == 1 and "is a directory" in r.err
    assert sorted(os.listdir("d")) == ["a.txt"]
