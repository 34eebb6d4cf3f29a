"""The library API: nczip.compress / decompress / open / Compressor, like gzip's and zstandard's."""
from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

import nczip
from corpora.samples import edge_cases
from nczip import api, container, segment

CASES = edge_cases()


@pytest.fixture
def small_segments(monkeypatch):
    """Segments of 100 bytes, so short inputs exercise multi-segment archives and streaming."""
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 100)


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_shot_functions_round_trip(tiny_gguf, name):
    data = CASES[name]
    archive = nczip.compress(data, model=tiny_gguf, threads=1)
    assert nczip.decompress(archive, model=tiny_gguf, threads=1) == data


@pytest.mark.parametrize("name", ["empty", "one_byte", "multilingual_utf8", "all_byte_values", "long_repeat"])
def test_open_streams_in_small_pieces_like_the_one_shot_functions(tiny_gguf, small_segments, name):
    data = CASES[name]
    with nczip.Compressor(model=tiny_gguf, threads=1, window=64) as c:
        expected = c.compress(data)
        buffer = io.BytesIO()
        with nczip.open(buffer, "wb", compressor=c) as f:
            for i in range(0, len(data), 7):
                assert f.write(data[i : i + 7]) == len(data[i : i + 7])
        assert buffer.getvalue() == expected  # streaming writes give the one-shot archive
        with nczip.open(io.BytesIO(expected), "rb", compressor=c) as f:
            pieces = iter(lambda: f.read(5), b"")
            assert b"".join(pieces) == data
    if len(data) > 100:
        assert len(container.read_archive(expected).segments) > 1


def test_open_by_path_and_readinto(tiny_gguf, tmp_path):
    path = tmp_path / "x.ncz"
    data = CASES["ascii"] * 3
    with nczip.open(path, "wb", model=tiny_gguf, threads=1) as f:
        f.write(data)
    with pytest.raises(FileExistsError):
        nczip.open(path, "xb", model=tiny_gguf)
    with nczip.open(path, model=tiny_gguf, threads=1) as f:
        buf = bytearray(len(data) + 10)
        n = f.readinto(buf)
        assert bytes(buf[:n]) == data[:n] and n > 0
        assert f.read() == data[n:]
        assert f.read() == b""
    assert nczip.decompress(path.read_bytes(), model=tiny_gguf) == data


def test_file_object_modes_and_errors(tiny_gguf):
    buffer = io.BytesIO()
    f = nczip.open(buffer, "wb", model=tiny_gguf, threads=1)
    assert f.writable() and not f.readable() and not f.seekable()
    with pytest.raises(io.UnsupportedOperation):
        f.read()
    f.close()
    f.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        f.write(b"x")
    with pytest.raises(ValueError, match="mode must be one of"):
        nczip.open(buffer, "rt")
    with pytest.raises(ValueError, match="not both"):
        nczip.open(buffer, "rb", compressor=nczip.Compressor(model=tiny_gguf), threads=1)


def test_streaming_read_refuses_the_wrong_model_before_a_segment_that_needs_none(tiny_gguf, tiny_gguf_other):
    text = CASES["ascii"] * 2
    head = b"\x00\xff stored first \x01" * 4
    with nczip.Compressor(model=tiny_gguf, threads=1, route="llm") as c:
        coded = container.read_archive(c.compress(text))
    header = dataclasses.replace(coded.header, original_size=len(head) + len(text),
                                 original_sha256=hashlib.sha256(head + text).digest())
    mixed = container.write_archive(container.Archive(
        header, (container.Segment(container.Method.STORED, len(head), 0, head), *coded.segments)))
    with nczip.open(io.BytesIO(mixed), model=tiny_gguf, threads=1) as f:
        assert f.read(len(head)) == head and f.read() == text
    with nczip.open(io.BytesIO(mixed), model=tiny_gguf_other, threads=1) as f:
        with pytest.raises(nczip.ModelMismatchError):
            f.read(1)


def test_streaming_read_detects_damage_and_trailing_bytes(tiny_gguf, small_segments):
    data = CASES["ascii"] * 4
    with nczip.Compressor(model=tiny_gguf, threads=1) as c:
        archive = c.compress(data)
        damaged = bytearray(archive)
        damaged[-3] ^= 0xFF  # inside the last payload
        with nczip.open(io.BytesIO(bytes(damaged)), compressor=c) as f:
            with pytest.raises(nczip.CorruptSegmentError) as excinfo:
                f.read()
        assert excinfo.value.segment_index == len(container.read_archive(archive).segments) - 1
        with nczip.open(io.BytesIO(archive + b"x"), compressor=c) as f:
            with pytest.raises(nczip.FormatError, match="after the last segment"):
                f.read()
        with nczip.open(io.BytesIO(archive[:-10]), compressor=c) as f:
            with pytest.raises(nczip.TruncatedError):
                f.read()


def test_a_compressor_loads_its_model_once_for_many_inputs(tiny_gguf):
    with nczip.Compressor(model=tiny_gguf, threads=1) as c:
        for i in range(100):
            data = f"input number {i}: some words\n".encode()
            assert c.decompress(c.compress(data)) == data
        assert c.models_loaded == 1


@pytest.mark.parametrize("options,message", [
    ({"window": 1}, r"window must be in 2\.\.131072"),
    ({"window": 64, "keep": 0}, r"keep must be in 1\.\.62"),
    ({"cdf_bits": 19}, r"cdf_bits must be in 20\.\.31"),
    ({"threads": 0}, r"threads must be an integer in 1\.\.256"),
    ({"threads": True}, r"threads must be an integer in 1\.\.256"),
])
def test_invalid_options_raise_value_error_with_the_range(options, message):
    with pytest.raises(ValueError, match=message):
        nczip.compress(b"x", **options)


def test_errors_are_one_family():
    for name in ("FormatError", "TruncatedError", "UnsupportedVersionError", "CorruptSegmentError",
                 "ChecksumError", "ModelMismatchError"):
        assert issubclass(getattr(nczip, name), nczip.NczipError)
    assert issubclass(nczip.NczipError, OSError)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=300))
def test_decompressing_garbage_raises_only_nczip_errors(tiny_compressor, data):
    with pytest.raises(nczip.NczipError):
        tiny_compressor.decompress(data)
    with pytest.raises(nczip.NczipError):
        nczip.open(io.BytesIO(data), compressor=tiny_compressor).read()


def test_the_backend_ids_are_known_without_importing_the_backends():
    """models/backends.py defines every id once; the backends take theirs from it, and knowing
    them imports no backend (nczip info, and the binary route, load neither numpy nor a model)."""
    import subprocess
    import sys

    from nczip.models import backends, engine
    from nczip.models.llama_cpp import ARITHMETIC, BACKEND_ID, BACKEND_IDS

    assert backends.LLAMA_IDS == BACKEND_IDS and set(ARITHMETIC) == set(BACKEND_IDS)
    assert backends.backend_of(BACKEND_ID) == "llama"
    assert backends.ENGINE_IDS == engine.BACKEND_IDS and backends.backend_of(engine.BACKEND_ID) == "engine"
    assert backends.backend_of("torch-cpu-f32-t4") == "torch" and backends.backend_of("torch-cuda-f32") == "torch"
    assert backends.backend_of("llama.cpp") is None and backends.backend_of("onnx") is None
    assert backends.backend_of("torch-cpu-f32-t0") is None and backends.backend_of("torch-cpu-f32-t257") is None
    code = "import sys, nczip.models.backends, nczip.api; print(sorted(m for m in ('numpy', 'llama_cpp', 'torch') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_slide_follows_the_backend_and_is_checked():
    from nczip.params import SLIDE_RESTART, SLIDE_SHIFT

    from nczip.api import Compressor

    shifting = Compressor()
    assert (shifting.params.slide, shifting.params.keep) == (SLIDE_SHIFT, 3072)
    restarting = Compressor(backend="torch")  # its cache cannot shift
    assert (restarting.params.slide, restarting.params.keep) == (SLIDE_RESTART, 2048)
    assert Compressor(slide="restart", window=1000).params.keep == 500
    with pytest.raises(ValueError, match="torch backend cannot shift"):
        Compressor(backend="torch", slide="shift")
    with pytest.raises(ValueError, match="slide must be one of"):
        Compressor(slide="roll")


def test_archives_name_how_their_windows_slide(tiny_gguf):
    """An archive without the slide key restarted its windows (nczip wrote none before), one
    with it shifts them; a value this nczip does not know is refused before decoding."""
    import dataclasses

    from nczip import container
    from nczip.api import check_header
    from nczip.api import Compressor
    from nczip.params import SLIDE_RESTART, SLIDE_SHIFT

    with Compressor(model=tiny_gguf, route="llm", threads=1, window=64) as c:
        header = container.read_header(c.compress(b"slide " * 40))[0]
    assert header.params["slide"] == SLIDE_SHIFT and check_header(header).slide == SLIDE_SHIFT
    without = dataclasses.replace(header, params={k: v for k, v in header.params.items() if k != "slide"})
    assert check_header(without).slide == SLIDE_RESTART
    unknown = dataclasses.replace(header, params={**header.params, "slide": 7})
    with pytest.raises(nczip.FormatError, match="slide must be"):
        check_header(unknown)
