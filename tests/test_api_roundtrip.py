"""Round trips through the whole pipeline on the tiny model: every edge case, window slides,
determinism, thread independence, and the checks that refuse a wrong model or damaged data."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpora.samples import edge_cases
from nczip import container
from nczip.api import Compressor
from nczip.codec import CodecParams, decode_tokens, encode_tokens
from nczip.errors import ChecksumError, CorruptSegmentError, FormatError, ModelMismatchError, NczipError
from nczip.models.llm import SlidingWindow

CASES = edge_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases_round_trip(tiny_compressor, name):
    data = CASES[name]
    archive = tiny_compressor.compress(data)
    assert tiny_compressor.decompress(archive) == data
    header, _ = container.read_header(archive)
    assert header.original_size == len(data)
    assert header.original_sha256 == hashlib.sha256(data).digest()


def test_long_input_slides_the_window_many_times(tiny_compressor):
    data = b"the cat sat on the mat. " * 40 + bytes(range(256)) + "naïve café ☕\n".encode() * 20
    archive = container.read_archive(tiny_compressor.compress(data))
    (segment,) = archive.segments
    assert segment.token_count > 5 * tiny_compressor.params.window  # really slid
    assert tiny_compressor.decompress(container.write_archive(archive)) == data


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_inputs_round_trip(tiny_compressor, data):
    assert tiny_compressor.decompress(tiny_compressor.compress(data)) == data


def test_same_input_gives_identical_archives(tiny_gguf):
    data = CASES["multilingual_utf8"] + CASES["ascii"] * 3
    with Compressor(model=tiny_gguf, threads=1, window=32) as a, Compressor(model=tiny_gguf, threads=1, window=32) as b:
        assert a.compress(data) == b.compress(data) == a.compress(data)


def test_thread_count_does_not_change_the_bits(tiny_gguf):
    data = CASES["ascii"] * 4 + CASES["invalid_utf8"]
    with Compressor(model=tiny_gguf, threads=1, window=48) as one, Compressor(model=tiny_gguf, threads=2, window=48) as two:
        archive = one.compress(data)
        assert two.compress(data) == archive
        assert two.decompress(archive) == data


def test_header_records_the_parameters(tiny_gguf):
    with Compressor(model=tiny_gguf, threads=1, window=40, keep=10) as c:
        header, _ = container.read_header(c.compress(b"hello world"))
    assert dict(header.params) == {"cdf_bits": 31, "check_every": 4096, "keep": 10, "n_batch": 512, "n_vocab": 559, "window": 40}
    assert header.backend == "llama.cpp"
    assert header.model_sha256 == hashlib.sha256(tiny_gguf.read_bytes()).digest()


def test_archive_of_another_model_is_refused_before_decoding(tiny_gguf, tiny_gguf_other):
    with Compressor(model=tiny_gguf_other, threads=1) as other:
        archive = other.compress(b"some text to code")
    with Compressor(model=tiny_gguf, threads=1) as mine:
        with pytest.raises(ModelMismatchError) as excinfo:
            mine.decompress(archive)
    message = str(excinfo.value)
    assert "tiny-seed1.gguf" in message
    assert hashlib.sha256(tiny_gguf_other.read_bytes()).hexdigest() in message


def test_unknown_parameter_is_refused(tiny_compressor):
    archive = container.read_archive(tiny_compressor.compress(b"abc"))
    params = dict(archive.header.params, future_knob=3)
    header = container.Header(
        backend=archive.header.backend,
        model_name=archive.header.model_name,
        model_sha256=archive.header.model_sha256,
        original_size=archive.header.original_size,
        original_sha256=archive.header.original_sha256,
        params=params,
    )
    with pytest.raises(ModelMismatchError, match="future_knob"):
        tiny_compressor.decompress(container.write_archive(container.Archive(header, archive.segments)))


def _rebuilt(archive: container.Archive, **header_changes) -> bytes:
    h = archive.header
    fields = dict(
        backend=h.backend, model_name=h.model_name, model_sha256=h.model_sha256,
        original_size=h.original_size, original_sha256=h.original_sha256, params=h.params,
    )
    fields.update(header_changes)
    return container.write_archive(container.Archive(container.Header(**fields), archive.segments))


def test_wrong_checksum_is_detected(tiny_compressor):
    archive = container.read_archive(tiny_compressor.compress(b"checksummed text"))
    forged = _rebuilt(archive, original_sha256=bytes(32))
    with pytest.raises(ChecksumError):
        tiny_compressor.decompress(forged)


def test_payload_damage_that_keeps_the_crc_is_still_caught(tiny_compressor):
    """Re-write a damaged payload with a valid CRC: the SHA-256 of the output must catch it."""
    data = b"A sentence long enough to give the coder a few bytes of payload to damage. " * 3
    archive = container.read_archive(tiny_compressor.compress(data))
    (segment,) = archive.segments
    payload = bytearray(segment.payload)
    payload[len(payload) // 2] ^= 0x10
    damaged = container.Archive(
        archive.header,
        (container.Segment(segment.method, segment.original_size, segment.token_count, bytes(payload)),),
    )
    with pytest.raises((ChecksumError, CorruptSegmentError)):
        tiny_compressor.decompress(container.write_archive(damaged))


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_archives_are_refused(tiny_compressor, cut):
    archive = tiny_compressor.compress(b"truncate me, truncate me, please")
    with pytest.raises(NczipError):
        tiny_compressor.decompress(archive[:-cut])


def test_not_an_archive(tiny_compressor):
    with pytest.raises(FormatError):
        tiny_compressor.decompress(b"PK\x03\x04 this is a zip file")


class RecordingModel:
    """Wraps a model and records every evaluate() call, to compare encoder and decoder."""

    def __init__(self, model):
        self.model = model
        self.calls: list[tuple] = []
        for name in ("identity", "n_vocab", "bos", "n_ctx", "n_batch"):
            setattr(self, name, getattr(model, name))

    def reset(self):
        self.calls.append(("reset",))
        self.model.reset()

    def evaluate(self, tokens, start):
        self.calls.append(("evaluate", tuple(tokens), start))
        return self.model.evaluate(tokens, start)


def test_encoder_and_decoder_make_identical_model_calls(tiny_model):
    ids = [tiny_model.byte_token(b) for b in b"abcdefghijklmnopqrstuvwxyz" * 3]
    params = CodecParams(window=20, keep=7)
    enc, dec = RecordingModel(tiny_model), RecordingModel(tiny_model)
    payload = encode_tokens(enc, ids, params)
    assert decode_tokens(dec, payload, len(ids), params) == ids
    assert enc.calls == dec.calls
    assert sum(1 for c in enc.calls if c[0] == "reset") > 3  # the window slid


def test_sliding_window_keeps_bos_and_the_last_tokens(tiny_model):
    rec = RecordingModel(tiny_model)
    window = SlidingWindow(rec, window=6, keep=3)
    window.start()
    for t in range(10, 20):
        window.advance(t)
    evaluations = [c for c in rec.calls if c[0] == "evaluate"]
    # BOS, then tokens one by one until 6 positions are filled, then BOS + the last 3 tokens.
    assert evaluations[0] == ("evaluate", (tiny_model.bos,), 0)
    assert evaluations[1:6] == [("evaluate", (t,), p) for p, t in zip(range(1, 6), range(10, 15))]
    assert evaluations[6] == ("evaluate", (tiny_model.bos, 13, 14, 15), 0)


def test_logits_after_a_slide_match_a_fresh_context(tiny_model):
    """The slide's prefill must give the same floats as evaluating those tokens from scratch."""
    window = SlidingWindow(tiny_model, window=8, keep=3)
    window.start()
    for t in range(20, 28):  # BOS + 7 tokens fill the window; the 8th token slides it
        logits = window.advance(t)
    slid = np.array(logits, copy=True)
    tiny_model.reset()
    fresh = np.array(tiny_model.evaluate([tiny_model.bos, 25, 26, 27], 0), copy=True)
    assert np.array_equal(slid, fresh)


@pytest.mark.parametrize("window,keep", [(3, 1), (16, 1), (16, 14), (100, 50)])
def test_window_settings_round_trip(tiny_gguf, window, keep):
    data = b"Sliding windows of every shape must decode exactly. " * 4
    with Compressor(model=tiny_gguf, threads=1, window=window, keep=keep) as c:
        assert c.decompress(c.compress(data)) == data
