"""The nczip command line: gzip's habits over the library in api.py.

    nczip [FILE...]            compress FILE to FILE.ncz (stdin -> stdout without FILE)
    nczip -d [FILE.ncz...]     decompress (-r: the files below directories)
    nczip -t|-l FILE.ncz...    test, list (the `test` and `info` subcommands)
    nczip compress|decompress|info|test ...
    nczip bench [FILE...]      nczip against gzip, bzip2, xz and zstd (see bench.py)

Exit status: 0 ok, 1 error, 2 usage. An error is one line on stderr, never a traceback.
"""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from typing import BinaryIO

import click

from . import __version__, container, segment
from .api import BACKENDS, Compressor
from .options import DEVICES, MAX_THREADS, ROUTES
from .params import DEFAULT_LEVEL, LEVELS, MAX_LANES, SLIDES, WINDOW_RANGE
from .errors import NczipError
from .fileio import atomic_writer, write_atomic
from .progress import ProgressLine

SUFFIX = ".ncz"


class Failure(Exception):
    """One file failed; the message is printed and the next file goes on."""


# -- gzip-style dispatch -------------------------------------------------------------------------
class GzipStyleGroup(click.Group):
    """`nczip FILE` compresses and `nczip -d FILE` decompresses, like gzip, beside the subcommands.

    When the first argument is not a subcommand, the arguments go to `compress`, or to
    `decompress` when -d/--decompress (alone or inside a cluster such as -dc) is among them, to
    `test` for gzip's -t/--test (-tv too) and to `info` for gzip's -l/--list.
    """

    # Long flag -> command, and short letter -> command; the letters are taken out of the
    # arguments. When several are named, the latest in _RANK wins (gzip -dt tests: test and
    # list outrank -d).
    _LONG = {"--decompress": "decompress", "--uncompress": "decompress", "--test": "test", "--list": "info"}
    _SHORT = {"t": "test", "l": "info", "d": "decompress"}
    _RANK = ("compress", "decompress", "test", "info")
    # Flags without a value that may be clustered (-dc, -tv); -o takes one (-ofile is not a cluster).
    _CLUSTER = frozenset("cdfklqrtv123456789")

    def parse_args(self, ctx, args):
        args = self._ray(self._levels(list(args)))
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h", "--version")):
            args = self._route(list(args))
        return super().parse_args(ctx, args)

    @staticmethod
    def _ray(args: list[str]) -> list[str]:
        """--ray takes an optional address: `--ray FILE` is a local Ray and a file, not an address."""
        out = []
        for i, arg in enumerate(args):
            if arg == "--":
                return out + args[i:]
            following = args[i + 1] if i + 1 < len(args) else None
            if arg == "--ray" and not (following in ("local", "auto") or (following and ":" in following)):
                arg = "--ray=local"
            out.append(arg)
        return out

    @classmethod
    def _levels(cls, args: list[str]) -> list[str]:
        """gzip's -1 .. -9 (also inside a cluster: -9c) and --fast / --best, as --level N."""
        out = []
        for i, arg in enumerate(args):
            if arg == "--":
                return out + args[i:]
            if arg in ("--fast", "--best"):
                out += ["--level", "1" if arg == "--fast" else "9"]
                continue
            if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1 and set(arg[1:]) <= cls._CLUSTER:
                digits = [c for c in arg[1:] if c.isdigit()]
                if digits:
                    out += ["--level", digits[-1]]
                    arg = "-" + "".join(c for c in arg[1:] if not c.isdigit())
                    if arg == "-":
                        continue
            out.append(arg)
        return out

    def _route(self, args: list[str]) -> list[str]:
        command = "compress"

        def name(found: str) -> None:
            nonlocal command
            command = max(command, found, key=self._RANK.index)

        routed = []
        for i, arg in enumerate(args):
            if arg == "--":
                routed.extend(args[i:])
                break
            if arg in self._LONG:
                name(self._LONG[arg])
                continue
            if arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) <= self._CLUSTER and len(arg) > 1:
                for letter, found in self._SHORT.items():
                    if letter in arg[1:]:
                        name(found)
                        arg = arg.replace(letter, "")
                if arg == "-":
                    continue
            routed.append(arg)
        return [command, *routed]


MODEL_OPTION = click.option(
    "--model", "model_path", type=click.Path(),
    help="GGUF model file, or a transformers model directory with --backend torch (default: Gemma-3-270M).",
)
BACKEND_OPTION = click.option(
    "--backend", type=click.Choice(list(BACKENDS)),
    help="engine: nczip's own, whose archives decode on any machine (default for Gemma-3 models); "
    "llama: llama.cpp (other GGUF architectures); torch: PyTorch/transformers (pip install 'nczip[torch]'). "
    "Decompressing uses the archive's backend unless told.",
)
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(list(DEVICES)), help="Torch backend's device (default: cuda when there is a GPU)."
)
THREADS_OPTION = click.option("--threads", type=click.IntRange(1, MAX_THREADS), help="CPU threads (default: physical cores; with --ray, per worker: 1).")
RAY_OPTIONS = (
    click.option("--ray", "ray", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                 help="Code the segments on a Ray cluster (pip install 'nczip[ray]'): alone, a Ray started here; "
                 "auto, the cluster Ray finds; or its address (host:port, ray://host:port). The archive is the same."),
    click.option("--ray-workers", type=click.IntRange(1, 4096), help="Ray workers (default: the cluster's CPUs / --threads)."),
)
LEVEL_HELP = "1 (fastest) to 9 (smallest), as -1 .. -9, --fast and --best: lanes, window and ensemble together."
WINDOW_HELP = "Context window in tokens (default: the level's)."
SLIDE_HELP = (
    "How a full context window moves on: shift (the default with llama.cpp) drops its oldest 1/4 from the "
    "cache; restart (the torch backend's only way) evaluates its last half again."
)
LANES_HELP = "Most lanes coded side by side: more is faster on long inputs, 1 compresses best (default: the level's)."
LLM_ONLY_HELP = "Predict with the language model alone, without the n-gram, match and bias models beside it."
ROUTE_HELP = ("auto: text to the model, binary to zstd or lzma, never larger than those; "
              "llm: every byte to the model (for measurements).")


def common_options(func):
    options = [
        click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to standard output, keep input files."),
        click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to this file (one input only)."),
        click.option("-k", "--keep", is_flag=True, help="Keep (don't delete) input files."),
        click.option("-r", "--recursive", is_flag=True, help="Go into directories: every regular file below them."),
        click.option("-f", "--force", is_flag=True, help="Overwrite existing output; write to a terminal."),
        click.option("-q", "--quiet", is_flag=True, help="No progress line or summaries."),
        click.option("-v", "--verbose", count=True, help="Report sizes, bpb and speed (-vv: ideal code length too)."),
        MODEL_OPTION,
        BACKEND_OPTION,
        DEVICE_OPTION,
        THREADS_OPTION,
        *RAY_OPTIONS,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(cls=GzipStyleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nczip")
def cli():
    """Lossless compression of text with a language model as the predictor.

    \b
    As gzip:
      nczip FILE...          compress each FILE to FILE.ncz (removed once verified; -k keeps it)
      nczip -d FILE.ncz...   decompress (-c: to standard output)
      nczip -t / -l FILE.ncz test, list
      cat x | nczip > x.ncz  filter standard input to standard output
    Each command's options: nczip COMMAND --help (nczip compress --help for the plain forms).
    """


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@common_options
@click.option("--level", type=click.IntRange(min(LEVELS), max(LEVELS)), default=DEFAULT_LEVEL, show_default=True, help=LEVEL_HELP)
@click.option("--window", type=click.IntRange(*WINDOW_RANGE), default=None, help=WINDOW_HELP)
@click.option("--lanes", type=click.IntRange(1, MAX_LANES), default=None, help=LANES_HELP)
@click.option("--llm-only", is_flag=True, help=LLM_ONLY_HELP)
@click.option("--route", type=click.Choice(list(ROUTES)), default="auto", show_default=True, help=ROUTE_HELP)
@click.option("--slide", type=click.Choice(list(SLIDES)), default=None, help=SLIDE_HELP)
@click.option("--verify/--no-verify", default=None, help="Decode the archive before deleting the input (default: on when the input is deleted).")
def compress(files, to_stdout, output, keep, recursive, force, quiet, verbose, model_path, backend, device, threads, ray,
             ray_workers, level, window, lanes, llm_only, route, slide, verify):
    """Compress FILES (or standard input) to FILE.ncz."""
    run = Run(quiet, verbose, force)
    with compressor_of(model=model_path, backend=backend, device=device, threads=threads, level=level, window=window,
                       lanes=lanes, llm_only=llm_only, route=route, slide=slide, ray=ray,
                       ray_workers=ray_workers) as compressor:
        for source, target in plan_outputs(files, to_stdout, output, decompressing=False, recursive=recursive):
            run.guard(source, lambda: compress_one(run, compressor, source, target, keep, verify))
    run.exit()


def compressor_of(**options) -> Compressor:
    """A Compressor for the command's options; options that do not go together (--device without
    --backend torch, ...) are a usage error (exit 2), not an internal one."""
    try:
        return Compressor(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@common_options
def decompress(files, to_stdout, output, keep, recursive, force, quiet, verbose, model_path, backend, device, threads,
               ray, ray_workers):
    """Decompress FILE.ncz (or standard input)."""
    run = Run(quiet, verbose, force)
    with compressor_of(model=model_path, backend=backend, device=device, threads=threads, ray=ray,
                       ray_workers=ray_workers) as compressor:
        for source, target in plan_outputs(files, to_stdout, output, decompressing=True, recursive=recursive):
            run.guard(source, lambda: decompress_one(run, compressor, source, target, keep))
    run.exit()


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def info(files):
    """Print the header and segment table of archives."""
    run = Run(quiet=False, verbose=0, force=False)
    for source in files:
        run.guard(source, lambda: print_info(source))
    run.exit()


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("-q", "--quiet", is_flag=True, help="Say nothing of archives that check out.")
@click.option("-v", "--verbose", count=True, help="Also report sizes, bpb and speed.")
@MODEL_OPTION
@BACKEND_OPTION
@DEVICE_OPTION
@THREADS_OPTION
@RAY_OPTIONS[0]
@RAY_OPTIONS[1]
def test(files, quiet, verbose, model_path, backend, device, threads, ray, ray_workers):
    """Decode archives and verify them, writing nothing."""
    run = Run(quiet, verbose, False)
    with compressor_of(model=model_path, backend=backend, device=device, threads=threads, ray=ray,
                       ray_workers=ray_workers) as compressor:
        for source in files or ("-",):
            def check(source=source):
                if source == "-" and sys.stdin.isatty():
                    raise Failure("compressed data not read from a terminal")
                data = read_input(source)
                run.decompress(compressor, data, source)
                run.say(f"{display(source)}: OK")
            run.guard(source, check)
    run.exit()


@cli.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--limit", type=click.IntRange(1), metavar="BYTES", help="Benchmark the first BYTES bytes of each file.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE", help="Write the results as JSON to FILE ('-': standard output).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE", help="Write the results as CSV to FILE ('-': standard output).")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), metavar="FILE.png", help="Plot bpb per file and bpb against speed (needs matplotlib).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr (nor the table, when it would go there).")
@MODEL_OPTION
@THREADS_OPTION
@click.option("--level", type=click.IntRange(min(LEVELS), max(LEVELS)), help=LEVEL_HELP + " [nczip's default]")
@click.option("--window", type=click.IntRange(*WINDOW_RANGE), help=WINDOW_HELP)
@click.option("--lanes", type=click.IntRange(1, MAX_LANES), help=LANES_HELP)
@click.option("--llm-only", is_flag=True, help=LLM_ONLY_HELP)
def bench(files, limit, json_out, csv_out, plot_out, quiet, model_path, threads, level, window, lanes, llm_only):
    """Compare nczip with gzip -9, bzip2 -9, xz -9e and zstd -19 on FILES.

    FILES are paths or names of corpus files (corpora/manifest.json, found in $NCZIP_CORPORA or
    ../shared/corpora); none: the standard text corpus (the first 1 MB of enwik8.head). Each
    compressor compresses and decompresses in its own process and every round trip is compared.
    The table goes to standard output, or to standard error when --json or --csv writes there.
    Exit status 1 when a round trip failed or no file could be read.
    """
    from . import bench as b  # imported here: the other commands need none of it

    if json_out == "-" and csv_out == "-":
        raise click.UsageError("--json and --csv cannot both write to standard output")
    if plot_out is not None:
        try:
            b.require_matplotlib()
        except b.BenchError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        inputs, missing = b.resolve_inputs(files, limit)
    except b.BenchError as exc:
        raise click.ClickException(str(exc)) from None
    if not inputs:
        for m in missing:
            click.echo(f"missing: {m.name} ({m.reason})", err=True)
        raise click.ClickException("no file to benchmark")
    say = (lambda message: None) if quiet else (lambda message: click.echo(f"nczip bench: {message}", err=True))
    tools = [b.nczip_tool(model=model_path, threads=threads, level=level, window=window, lanes=lanes, llm_only=llm_only),
             *b.external_tools()]
    report = b.run(
        inputs, tools, missing=missing, limit=limit,
        on_file=lambda f: say(f"{f.name} ({f.bytes:,} bytes)"),
        on_row=lambda r: say(f"  {r.compressor}: " + (f"{r.bpb:.4f} bpb" if r.status == "ok" else f"{r.status}: {r.error}")),
    )
    machine_out = "-" in (json_out, csv_out)
    if not (machine_out and quiet):
        click.echo(b.format_table(report), nl=False, err=machine_out)
    for target, text in ((json_out, b.to_json), (csv_out, b.to_csv)):
        if target is not None:
            write_text_output(target, text(report))
    if plot_out is not None:
        try:
            b.plot(report, plot_out)
        except OSError as exc:
            raise click.ClickException(f"cannot write {plot_out}: {exc.strerror or exc}") from None
    if report.failed:
        raise click.ClickException(f"{len(report.failed)} of {len(report.rows)} runs failed (see FAILED in the table)")


def write_text_output(target: str, text: str) -> None:
    if target == "-":
        click.echo(text, nl=False)
        return
    try:
        write_atomic(target, text.encode())
    except OSError as exc:
        raise click.ClickException(f"cannot write {target}: {exc.strerror or exc}") from None


# -- per-file work ---------------------------------------------------------------------------------
class Run:
    """State shared across the files of one command: flags, failures, messages."""

    def __init__(self, quiet: bool, verbose: int, force: bool):
        self.quiet, self.verbose, self.force = quiet, verbose, force
        self.failed = False

    def say(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)

    def guard(self, source: str, work) -> None:
        try:
            work()
        except BrokenPipeError:
            raise  # the reader of stdout went away: no later file can be written either
        except Failure as exc:
            self.fail(f"{display(source)}: {exc}")
        except NczipError as exc:
            self.fail(f"{display(source)}: {exc}")
        except OSError as exc:
            self.fail(f"{display(source)}: {exc.strerror or exc}")
        except Exception as exc:  # a bug: reported in one line, and the next file still goes on
            if os.environ.get("NCZIP_DEBUG"):
                raise
            self.fail(f"{display(source)}: {internal_error(exc)}")

    def fail(self, message: str) -> None:
        click.echo(f"nczip: {message}", err=True)
        self.failed = True

    def exit(self) -> None:
        sys.exit(1 if self.failed else 0)

    def progress(self, total: int, label: str):
        if self.quiet or not sys.stderr.isatty():
            return contextlib.nullcontext(None)
        return _closing_progress(ProgressLine(total, label))

    def compress(self, compressor: Compressor, stream: BinaryIO, size: int | None, source: str) -> tuple[bytes, int]:
        """(archive, input bytes) for what `stream` holds, read one segment at a time."""
        started = time.perf_counter()
        with self.progress(size or 0, f"{display(source)}: compressing") as line:
            builder = compressor.archive_builder(
                progress=_advance(line, compressor), measure_ideal=self.verbose >= 2
            )
            total = builder.add_stream(stream.read)
            archive = container.write_archive(builder.finish())
        elapsed = time.perf_counter() - started
        if self.verbose:
            stats = compressor.last_stats
            message = (
                f"{display(source)}: {total} -> {len(archive)} bytes, "
                f"{bpb(len(archive), total):.4f} bpb, {stats.tokens if stats else 0} tokens, "
                f"{total / 1024 / max(elapsed, 1e-9):.2f} KB/s"
            )
            if stats and stats.measure_ideal and total:
                message += f", ideal {stats.ideal_bits / total:.4f} bpb"
            self.say(message)
        return archive, total

    def decompress(self, compressor: Compressor, data: bytes, source: str, sink=None) -> int:
        """Decode `data`, handing each segment's bytes to `sink` (None: discard them, to test);
        returns the output size. Raises before returning if the output does not check out."""
        started = time.perf_counter()
        header, _ = container.read_header(data)
        size = 0
        with self.progress(header.original_size, f"{display(source)}: decompressing") as line:
            for part in compressor.iter_decompress(data, progress=_advance(line, compressor)):
                if sink is not None:
                    sink(part)
                size += len(part)
        if self.verbose:
            elapsed = time.perf_counter() - started
            self.say(
                f"{display(source)}: {len(data)} -> {size} bytes, {bpb(len(data), size):.4f} bpb, "
                f"{size / 1024 / max(elapsed, 1e-9):.2f} KB/s"
            )
        return size


def _advance(line: ProgressLine | None, compressor: Compressor):
    """The progress callback: per token group locally, per whole segment on a Ray cluster."""
    if line is None:
        return None
    return line.advance_segment if compressor.cluster() is not None else line.advance


@contextlib.contextmanager
def _closing_progress(line: ProgressLine):
    try:
        yield line
    finally:
        line.close()


def plan_outputs(files, to_stdout: bool, output: str | None, *, decompressing: bool, recursive: bool = False):
    """(source, target) pairs; target None means standard output."""
    sources = list(files) or ["-"]
    if recursive:
        sources = [path for source in sources for path in files_below(source, decompressing)]
    if output is not None and len(sources) != 1:
        raise click.UsageError("-o/--output takes exactly one input file")
    if output is not None and to_stdout:
        raise click.UsageError("-o/--output and -c/--stdout exclude each other")
    for source in sources:
        if output == "-":
            yield source, None
        elif output is not None:
            yield source, output
        elif to_stdout or source == "-":
            yield source, None
        elif decompressing:
            yield source, source[: -len(SUFFIX)] if source.endswith(SUFFIX) else ""
        else:
            yield source, source + SUFFIX


def files_below(source: str, decompressing: bool) -> list[str]:
    """-r: a directory stands for the regular files below it, in name order: when compressing
    those without the .ncz suffix, when decompressing those with it (the others are left alone,
    as gzip -r leaves them, without a message for each). Symbolic links are not followed. Any
    other argument stands for itself."""
    if source == "-" or os.path.islink(source) or not os.path.isdir(source):
        return [source]
    found = []
    for root, dirs, names in os.walk(source):  # does not follow links to directories
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if not os.path.islink(path) and os.path.isfile(path) and path.endswith(SUFFIX) == decompressing:
                found.append(path)
    return found


def refuse_symlink(run: Run, source: str) -> None:
    # As gzip: without -f a link is not followed, so deleting "the input" never removes a link
    # whose target the user meant to keep pointing at.
    if source != "-" and not run.force and os.path.islink(source):
        raise Failure("is a symbolic link -- ignored (use -f to follow it)")


def compress_one(run: Run, compressor: Compressor, source: str, target: str | None, keep: bool, verify: bool | None):
    refuse_symlink(run, source)
    if source != "-" and source.endswith(SUFFIX) and not run.force:
        raise Failure(f"already has {SUFFIX} suffix -- unchanged (use -f to compress anyway)")
    if target is None:
        refuse_terminal(run, "compressed data not written to a terminal (use -f to force)")
    check_target(run, source, target)
    # The input is read one segment at a time: memory follows the archive, not the input.
    with open_input(source) as (stream, size):
        archive, size = run.compress(compressor, stream, size, source)
    deleting = source != "-" and target is not None and not keep
    if verify if verify is not None else deleting:
        # The input goes away only once the archive is proven to give it back: the decoded
        # bytes must have the size and SHA-256 the archive recorded while reading the input.
        with run.progress(size, f"{display(source)}: verifying") as line:
            try:
                for _ in compressor.iter_decompress(archive, progress=_advance(line, compressor)):
                    pass
            except NczipError as exc:
                raise Failure(f"verification failed: {exc}; input kept") from None
    publish(run, archive, target, like=source)
    if deleting:
        os.unlink(source)


def decompress_one(run: Run, compressor: Compressor, source: str, target: str | None, keep: bool):
    refuse_symlink(run, source)
    if target == "":
        raise Failure(f"unknown suffix -- ignored (expected {SUFFIX}; use -c or -o to name the output)")
    if source == "-":
        refuse_terminal_input(run, "compressed data not read from a terminal (use -f to force)")
    check_target(run, source, target)
    data = read_input(source)
    if target is None:
        stream_to_stdout(run, compressor, data, source)
    else:
        # A file is written segment by segment through a temporary file, renamed into place
        # only after the last segment checked out (size and SHA-256).
        with publishing(run, target, like=source) as out:
            run.decompress(compressor, data, source, out.write)
    if source != "-" and target is not None and not keep:
        os.unlink(source)


def stream_to_stdout(run: Run, compressor: Compressor, data: bytes, source: str) -> None:
    """Decode to standard output as gzip and zstd do, one segment at a time, so memory does not
    grow with the output. Damage and the wrong model are found before the first byte: the header,
    table and every payload CRC are checked up front, and a segment is written only once it has
    decoded in full and passed its own checks (drift checkpoints, the exact end of its coded
    stream, its length). The size and SHA-256 of the whole come last; a mismatch there still
    exits 1, and the message says how many bytes already went out."""
    stream = sys.stdout.buffer
    written = 0

    def emit(part: bytes) -> None:
        nonlocal written
        stream.write(part)
        stream.flush()
        written += len(part)

    try:
        run.decompress(compressor, data, source, emit)
    except NczipError as exc:
        if not written:
            raise
        raise Failure(f"{exc}; the {written} bytes already written to standard output are not the original") from None


def check_target(run: Run, source: str, target: str | None) -> None:
    """Refuse an output path we must not write, before spending time on the input."""
    if target is None:
        return
    if source != "-" and os.path.exists(target) and os.path.exists(source):
        with contextlib.suppress(OSError):
            if os.path.samefile(source, target):
                # Even with -f: writing it would destroy the input, and deleting it the output.
                raise Failure(f"input and output are the same file ({target})")
    if os.path.isdir(target):
        raise Failure(f"{target} is a directory")
    if os.path.lexists(target) and not run.force:
        raise Failure(f"{target} already exists; use -f to overwrite")


def publish(run: Run, data: bytes, target: str | None, *, like: str) -> None:
    if target is None:
        stream = sys.stdout.buffer
        stream.write(data)
        stream.flush()
        return
    check_target(run, like, target)  # again: it may have appeared while we worked
    source_stat = os.stat(like) if like != "-" else None
    try:
        write_atomic(target, data, like=source_stat)
    except OSError as exc:
        raise Failure(f"cannot write {target}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def publishing(run: Run, target: str, *, like: str):
    """publish() for output that arrives in pieces: a file object to write them to."""
    check_target(run, like, target)
    source_stat = os.stat(like) if like != "-" else None
    try:
        with atomic_writer(target, like=source_stat) as f:
            yield f
    except OSError as exc:
        if isinstance(exc, NczipError):
            raise
        raise Failure(f"cannot write {target}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def open_input(source: str):
    """(binary stream, size or None) of an input, checked as read_input checks it."""
    if source == "-":
        yield sys.stdin.buffer, None
        return
    _check_input(source)
    with open(source, "rb") as f:
        yield f, os.fstat(f.fileno()).st_size


def _check_input(source: str) -> None:
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        raise Failure("no such file") from None
    if stat.S_ISLNK(st.st_mode):
        st = os.stat(source)  # follow, but a dangling link is reported as such
    if stat.S_ISDIR(st.st_mode):
        raise Failure("is a directory -- ignored")
    if not stat.S_ISREG(st.st_mode):
        raise Failure("not a regular file -- ignored")


def read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    _check_input(source)
    with open(source, "rb") as f:
        return f.read()


def refuse_terminal(run: Run, message: str) -> None:
    if not run.force and sys.stdout.isatty():
        raise Failure(message)


def refuse_terminal_input(run: Run, message: str) -> None:
    if not run.force and sys.stdin.isatty():
        raise Failure(message)


def print_info(source: str) -> None:
    data = read_input(source)
    archive = container.read_archive(data, verify_payloads=False)
    damaged = set(container.damaged_segments(data))
    h = archive.header
    fields = [
        ("archive", f"{display(source)} ({len(data)} bytes)"),
        ("format", container.form_name(data)),
        ("backend", h.backend or "-"),
        ("model", h.model_name or "-"),
        ("model sha256", h.model_sha256.hex() if h.backend else "- (no segment needs a model)"),
        ("original size", f"{h.original_size} bytes"),
        ("original sha256", h.original_sha256.hex() + (" (its first 8 bytes)" if len(h.original_sha256) < 32 else "")),
        ("parameters", " ".join(f"{k}={v}" for k, v in h.params.items()) or "-"),
        ("ratio", f"{bpb(len(data), h.original_size):.4f} bpb" if h.original_size else "-"),
        ("segments", len(archive.segments)),
    ]
    lines = [f"{name + ':':<17}{value}" for name, value in fields]
    lines += [
        f"  {'#':>4} {'method':<7} {'offset':>10} {'original':>10} {'tokens':>8} {'payload':>10} {'bpb':>7}  status",
    ]
    offset = 0
    for i, seg in enumerate(archive.segments):
        status = "DAMAGED" if i in damaged else "ok"
        lines.append(
            f"  {i + 1:>4} {seg.method.name:<7} {offset:>10} {seg.original_size:>10} {seg.token_count:>8} "
            f"{len(seg.payload):>10} {bpb(len(seg.payload), seg.original_size):>7.4f}  {status}"
        )
        offset += seg.original_size
    click.echo("\n".join(lines))
    if damaged:  # the table is printed either way; the exit status must still say "damaged"
        numbers = ", ".join(str(i + 1) for i in sorted(damaged))
        raise Failure(f"segment{'s' if len(damaged) > 1 else ''} {numbers} of {len(archive.segments)} damaged (CRC-32 mismatch)")


def bpb(compressed_bytes: int, original_bytes: int) -> float:
    return compressed_bytes * 8 / original_bytes if original_bytes else 0.0


def display(source: str) -> str:
    return "stdin" if source == "-" else source


# -- entry point ---------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so temporary files are removed on the way out. Not a
    KeyboardInterrupt, which click would answer with a stray empty line on stderr."""


def _terminate(signum, frame):
    raise Terminated


def internal_error(exc: BaseException) -> str:
    return f"internal error: {type(exc).__name__}: {exc} (set NCZIP_DEBUG=1 for a traceback)"


def _silence_stdout() -> None:
    # The reader of stdout is gone: point fd 1 at /dev/null so the flush at exit does not fail
    # again with a second "Exception ignored ... BrokenPipeError" message.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread (tests): leave handlers alone
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if previous is not None:  # called in-process (tests, scripts): give the handler back
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="nczip", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        # One line, like every other error; the hint says where the full usage is.
        command = exc.ctx.command_path if exc.ctx is not None else "nczip"
        click.echo(f"nczip: {exc.format_message()} (try '{command} --help')", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"nczip: {exc.format_message()}", err=True)
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("nczip: interrupted", err=True)
        return 130
    except Terminated:
        click.echo("nczip: terminated", err=True)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except SystemExit as exc:
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else 1
    except NczipError as exc:
        click.echo(f"nczip: {exc}", err=True)
        return 1
    except Exception as exc:  # a bug: still one line, with a hint to get the traceback
        if os.environ.get("NCZIP_DEBUG"):
            raise
        click.echo(f"nczip: {internal_error(exc)}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0
