"""--ray: segments coded on a Ray cluster (nczip/distributed.py), here a local one on 127.0.0.1
that the module starts (`ray start --head`) and stops. The archive must be byte for byte a local
run's, decompression through the cluster must give the original, and a worker killed mid-run
must cost a retry of its chunk, not the run.

The input is cut into 64 KB chunks instead of 1 MiB (segment.SEGMENT_BYTES, patched in this
process, where the coordinator cuts; workers only code what they are sent), so that a short
input makes many chunks for the tiny model.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from corpora.samples import edge_cases  # noqa: E402
from nczip import container, segment  # noqa: E402
from nczip.api import Compressor  # noqa: E402
from nczip.distributed import machine_class, refuse_mixed  # noqa: E402
from nczip.errors import NczipError  # noqa: E402

CHUNK = 64 * 1024
TEXT = b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do.\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster_address(tmp_path_factory):
    """A Ray head on 127.0.0.1 with 2 CPUs, for this module's tests."""
    ray_cli = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    temp = tmp_path_factory.mktemp("ray")
    # Token authentication off on both sides, whatever ~/.ray holds: Ray turns it on for `ray start`
    # when a token file exists (a local ray.init() writes one), and the driver must then agree.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    start = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(segment, "SEGMENT_BYTES", CHUNK)


def mixed_input() -> bytes:
    """Text and binary, ~5 chunks of 64 KB."""
    rng = __import__("random").Random(5)
    return TEXT * 1200 + rng.randbytes(50_000) + TEXT * 900 + bytes(40_000) + edge_cases()["multilingual_utf8"] * 50


def test_a_cluster_writes_the_local_runs_archive_and_decodes_it(tiny_gguf, cluster_address, small_chunks):
    """Route "llm": the tiny random-weight model codes every chunk (it would lose to zstd on all
    of them); the real model's test below mixes text and binary segments."""
    data = mixed_input()
    options = dict(model=tiny_gguf, window=64, route="llm")
    with Compressor(threads=1, **options) as local:
        expected = local.compress(data)
    segments = container.read_archive(expected).segments
    assert len(segments) >= 5 and {s.method.name for s in segments} == {"LLM"}
    with Compressor(ray=cluster_address, ray_workers=2, **options) as distributed:
        assert distributed.compress(data) == expected
        assert distributed.decompress(expected) == data
        assert len(set(distributed.cluster().worker_pids())) == 2
    with Compressor(threads=1, **options) as local:  # and the cluster's archive decodes anywhere
        assert local.decompress(expected) == data


@pytest.mark.real_model
def test_text_and_binary_chunks_through_a_cluster_with_the_default_model(cluster_address, monkeypatch):
    """The default model and engine at level 1 (its many short lanes decode fast): chunks of
    6,000 bytes, text, random bytes, text, so the archive holds LLM and STORED segments."""
    from corpora import locate

    alice = locate.find("alice29.txt")
    if alice is None:
        pytest.skip("alice29.txt not found (set NCZIP_CORPORA)")
    text = alice.read_bytes()
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 6000)
    data = text[:6000] + __import__("random").Random(7).randbytes(6000) + text[6000:12000]
    with Compressor(level=1, threads=1) as local:
        expected = local.compress(data)
    assert [s.method.name for s in container.read_archive(expected).segments] == ["LLM", "STORED", "LLM"]
    seen = []
    with Compressor(level=1, ray=cluster_address, ray_workers=2) as distributed:
        assert distributed.compress(data, progress=lambda n, t: seen.append(n)) == expected
        assert distributed.decompress(expected) == data
    assert sum(seen) == len(data)


def test_the_command_line_takes_ray(tiny_gguf, cluster_address, small_chunks, tmp_path, monkeypatch):
    """--ray ADDRESS on compress, decompress and test; --ray before a file name is a local Ray
    and the file (not an address): here only the address form runs, the cluster's."""
    from click.testing import CliRunner

    from nczip import cli

    monkeypatch.chdir(tmp_path)
    data = mixed_input()
    (tmp_path / "a.txt").write_bytes(data)
    runner = CliRunner()
    model = ["--model", str(tiny_gguf), "--window", "64"]
    out = runner.invoke(cli.cli, ["-k", "--ray", cluster_address, "--ray-workers", "2", *model, "a.txt"])
    assert out.exit_code == 0, out.output
    with Compressor(model=tiny_gguf, window=64, threads=1) as local:
        assert (tmp_path / "a.txt.ncz").read_bytes() == local.compress(data)
    out = runner.invoke(cli.cli, ["test", "--ray", cluster_address, "--model", str(tiny_gguf), "a.txt.ncz"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli.cli, ["-d", "-c", f"--ray={cluster_address}", "--model", str(tiny_gguf), "a.txt.ncz"])
    assert out.exit_code == 0 and out.stdout_bytes == data
    assert cli.GzipStyleGroup._ray(["--ray", "a.txt"]) == ["--ray=local", "a.txt"]
    assert cli.GzipStyleGroup._ray(["--ray", "auto", "a.txt"]) == ["--ray", "auto", "a.txt"]


def test_a_worker_killed_mid_run_costs_a_retry_not_the_run(tiny_gguf, cluster_address, small_chunks):
    data = mixed_input() * 2
    options = dict(model=tiny_gguf, window=64, route="llm")
    with Compressor(threads=1, **options) as local:
        expected = local.compress(data)
    with Compressor(ray=cluster_address, ray_workers=2, **options) as distributed:
        victim = distributed.cluster().worker_pids()[0]
        killed = []

        def kill_once(nbytes, ntokens):
            if not killed:  # after the first chunk came back: the victim holds more work
                os.kill(victim, signal.SIGKILL)
                killed.append(time.monotonic())

        archive = distributed.compress(data, progress=kill_once)
        assert killed and archive == expected
        assert victim not in distributed.cluster().worker_pids()  # Ray restarted it
        assert distributed.decompress(archive) == data


def test_a_chunk_that_fails_its_check_is_coded_again_never_written(tiny_gguf, cluster_address, small_chunks,
                                                                   monkeypatch):
    """The first result of chunk 2 "arrives damaged" (its check fails, as a payload altered on the
    way would): it is coded again and the archive is still the local run's. A chunk that never
    checks out ends the run with an error, writing nothing."""
    from nczip import distributed

    data = mixed_input()
    options = dict(model=tiny_gguf, window=64, route="llm")
    with Compressor(threads=1, **options) as local:
        expected = local.compress(data)
    checked = []
    real_check = distributed._encoded_well

    def damaged_once(chunk, coded, crcs):
        checked.append(len(chunk))
        return real_check(chunk, coded, crcs) and len(checked) != 2

    monkeypatch.setattr(distributed, "_encoded_well", damaged_once)
    with Compressor(ray=cluster_address, ray_workers=2, **options) as distributed_compressor:
        assert distributed_compressor.compress(data) == expected
        assert len(checked) == len(container.read_archive(expected).segments) + 1
        monkeypatch.setattr(distributed, "_encoded_well", lambda chunk, coded, crcs: False)
        with pytest.raises(NczipError, match="came back from its worker damaged 3 times"):
            distributed_compressor.compress(data)


def test_workers_of_unlike_machines_are_refused_where_the_floats_differ():
    assert machine_class("engine") == "portable"  # the engine's floats are the same everywhere
    refuse_mixed(["portable", "portable"], "engine")
    refuse_mixed(["llama 0.3.36 on x86_64 cpu-flags a", "llama 0.3.36 on x86_64 cpu-flags a"], "llama")
    with pytest.raises(NczipError, match="llama backend computes other floats .*--backend engine"):
        refuse_mixed(["llama 0.3.36 on x86_64 cpu-flags a", "llama 0.3.36 on x86_64 cpu-flags b"], "llama")
    assert machine_class("llama").startswith("llama ")


def test_ray_options_are_checked():
    with pytest.raises(ValueError, match="ray_workers"):
        Compressor(ray="local", ray_workers=0)


def test_the_progress_line_counts_segments_done_across_the_cluster():
    import io

    from nczip.progress import ProgressLine

    out = io.StringIO()
    line = ProgressLine(3 * CHUNK, "a.txt: compressing", stream=out, min_interval=0)
    line.advance_segment(CHUNK, 100)
    line.advance_segment(CHUNK, 100)
    shown = out.getvalue().split("\r")[-1]
    assert f"{2 * CHUNK}/{3 * CHUNK} bytes" in shown and "2 segments" in shown and "ETA" in shown
