"""Round trips through the whole pipeline on the tiny model: every edge case, window slides,
determinism, thread independence, and the checks that refuse a wrong model or damaged data."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from corpora.samples import edge_cases
from nczip import api, container
from nczip.api import check_header
from nczip.api import Compressor
from nczip.codec import CodecParams, decode_tokens, encode_tokens
from nczip.params import SLIDE_RESTART, SLIDE_SHIFT
from nczip.ensemble import EnsembleParams
from nczip.errors import ChecksumError, CorruptSegmentError, FormatError, ModelMismatchError, NczipError
from nczip.models.llm import LockstepLanes

CASES = edge_cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases_round_trip(tiny_compressor, name):
    data = CASES[name]
    archive = tiny_compressor.compress(data)
    assert tiny_compressor.decompress(archive) == data
    header, _ = container.read_header(archive)
    assert header.original_size == len(data)
    assert header.original_sha256 == hashlib.sha256(data).digest()


@pytest.fixture(scope="module")
def llm_only_compressor(tiny_gguf):
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=32, lanes=3, lane_tokens=16, primer=8, llm_only=True) as c:
        yield c


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases_round_trip_llm_only(llm_only_compressor, name):
    data = CASES[name]
    assert llm_only_compressor.decompress(llm_only_compressor.compress(data)) == data


def test_the_ensemble_pays_on_repeated_text(tiny_gguf):
    """The tiny model knows nothing, so repeats are all the cheap models can find: the archive
    with them must be far smaller."""
    data = bytes(range(32, 127)) * 8
    sizes = {}
    for llm_only in (False, True):
        with Compressor(model=tiny_gguf, route="llm", threads=1, llm_only=llm_only) as c:
            archive = c.compress(data)
            assert c.decompress(archive) == data
        sizes[llm_only] = len(archive)
    assert sizes[False] < 0.5 * sizes[True], sizes


def test_ensemble_settings_other_than_a_preset_are_recorded_in_full(tiny_gguf):
    data = bytes(range(32, 127)) * 4
    custom = dataclasses.replace(EnsembleParams(), orders=2, match_min=6)
    with Compressor(model=tiny_gguf, route="llm", threads=1) as c:
        c.params = dataclasses.replace(c.params, ensemble=custom)
        archive = c.compress(data)
        params = container.read_header(archive)[0].params
        assert params["ens_orders"] == 2 and params["ens_match_min"] == 6 and "ensemble" not in params
    with Compressor(model=tiny_gguf, route="llm", threads=1) as fresh:  # decodes with what the header says
        assert fresh.decompress(archive) == data


def test_unknown_ensemble_preset_is_refused(tiny_compressor):
    archive = container.read_archive(tiny_compressor.compress(b"some text"))
    header = dataclasses.replace(archive.header, params={**archive.header.params, "ensemble": 99})
    forged = container.write_archive(dataclasses.replace(archive, header=header))
    with pytest.raises(FormatError, match="preset 99"):
        tiny_compressor.decompress(forged)


def test_long_input_slides_the_window_many_times(tiny_compressor):
    data = b"the cat sat on the mat. " * 40 + bytes(range(256)) + "naïve café ☕\n".encode() * 20
    archive = container.read_archive(tiny_compressor.compress(data))
    (segment,) = archive.segments
    assert segment.token_count > 5 * tiny_compressor.params.window  # really slid
    assert tiny_compressor.decompress(container.write_archive(archive)) == data


@settings(max_examples=examples(25), deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=120).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_inputs_round_trip(tiny_compressor, data):
    assert tiny_compressor.decompress(tiny_compressor.compress(data)) == data


@pytest.fixture(scope="module")
def lanes_compressor(tiny_gguf):
    """Up to 5 lanes of at least 8 tokens, windows of 24: lanes, slides and ragged ends all show
    up on short inputs."""
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=24, lanes=5, lane_tokens=8, primer=6) as c:
        yield c


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases_round_trip_in_lanes(lanes_compressor, name):
    data = CASES[name]
    assert lanes_compressor.decompress(lanes_compressor.compress(data)) == data


@settings(max_examples=examples(25), deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_inputs_round_trip_in_lanes(lanes_compressor, data):
    assert lanes_compressor.decompress(lanes_compressor.compress(data)) == data


@pytest.mark.parametrize("primer", [0, 1, 5, 12])
@pytest.mark.parametrize("count", [1, 7, 8, 16, 17, 21, 22, 39, 40, 41, 200])
def test_every_lane_split_round_trips(tiny_model, count, primer):
    """Token counts around the lane thresholds: 1..5 lanes, lengths differing by one, primers
    short and longer than half the window (which caps them)."""
    ids = [tiny_model.byte_token(b) for b in (b"lockstep lanes! " * 13)[:count]]
    params = CodecParams(window=24, keep=9, lanes=5, lane_tokens=8, primer=primer)
    payload = encode_tokens(tiny_model, ids, params)
    assert decode_tokens(tiny_model, payload, len(ids), params) == ids


def test_lanes_are_independent_of_thread_count(tiny_gguf):
    data = CASES["ascii"] * 6 + CASES["multilingual_utf8"]
    options = dict(model=tiny_gguf, route="llm", window=32, lanes=4, lane_tokens=16)
    with Compressor(threads=1, **options) as one, Compressor(threads=2, **options) as two:
        archive = one.compress(data)
        assert container.read_archive(archive).segments[0].token_count >= 64  # 4 lanes
        assert two.compress(data) == archive
        assert two.decompress(archive) == data


def test_same_input_gives_identical_archives(tiny_gguf):
    data = CASES["multilingual_utf8"] + CASES["ascii"] * 3
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=32) as a, Compressor(model=tiny_gguf, route="llm", threads=1, window=32) as b:
        assert a.compress(data) == b.compress(data) == a.compress(data)


def test_thread_count_does_not_change_the_bits(tiny_gguf):
    data = CASES["ascii"] * 4 + CASES["invalid_utf8"]
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=48) as one, Compressor(model=tiny_gguf, route="llm", threads=2, window=48) as two:
        archive = one.compress(data)
        assert two.compress(data) == archive
        assert two.decompress(archive) == data


def test_header_records_the_parameters(tiny_gguf):
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=40, keep=10) as c:
        header, _ = container.read_header(c.compress(b"hello world"))
    assert dict(header.params) == {
        "cdf_bits": 31,
        "check_every": 0,  # no drift checkpoints: the engine computes the same floats everywhere
        "keep": 10,
        "lane_tokens": 2048,
        "lanes": 16,
        "n_batch": 512,
        "n_vocab": 559,
        "primer": 512,
        "window": 40,
        "slide": 1,  # the window shifts (absent: restarts, as in archives from before)
        "ensemble": 3,  # the default ensemble preset
    }
    with Compressor(model=tiny_gguf, route="llm", threads=1, llm_only=True) as c:
        header, _ = container.read_header(c.compress(b"hello world"))
    assert not any(key.startswith("ens") for key in header.params)
    assert header.backend == "nczip-1"  # nczip's own engine: the default for a Gemma-3 GGUF
    assert header.model_sha256 == hashlib.sha256(tiny_gguf.read_bytes()).digest()
    with Compressor(model=tiny_gguf, route="llm", threads=1, backend="llama") as c:
        header, _ = container.read_header(c.compress(b"hello world"))
    assert header.backend == "llama.cpp-fa2-sw"  # flash attention, lone lanes padded, sliding-window ring
    assert check_header(header).check_every == 4096  # llama.cpp's floats depend on the machine: checkpoints


@pytest.mark.parametrize("level", range(1, 10))
def test_every_level_is_one_preset_number(tiny_gguf, level):
    data = b"hello world, " * 20
    with Compressor(model=tiny_gguf, route="llm", threads=1, level=level) as c:
        archive = c.compress(data)
        header, _ = container.read_header(archive)
        assert dict(header.params) == {"codec": 10 + level, "n_vocab": 559}
        assert c.decompress(archive) == data
    # The same settings spelled out mean the same coding, and cost ~80 bytes more (LLM_SINGLE form).
    spelled = dataclasses.replace(header, params={**api.CODEC_PRESETS[10 + level], "n_vocab": 559})
    assert check_header(spelled) == check_header(header)
    assert len(container.write_archive(container.Archive(spelled, container.read_archive(archive).segments))) - len(archive) >= 70


def test_the_default_level_is_preset_2_without_checkpoints_and_with_ensemble_preset_3():
    from nczip.params import CODEC_PRESETS, DEFAULT_LEVEL

    default = dict(CODEC_PRESETS[10 + DEFAULT_LEVEL])
    assert default.pop("check_every") == 0 and default.pop("ensemble") == 3
    assert default == {k: v for k, v in CODEC_PRESETS[2].items() if k != "check_every"}


def test_ensemble_preset_1_archives_still_decode(tiny_gguf):
    """Preset 1 (tables up to 2^20 buckets) is what nczip wrote before preset 2; below 2^17
    tokens a segment's tables are the same size under both, so only the preset number differs.
    Its full form, written before ens_max_table_bits existed, still means max_table_bits=20."""
    from nczip.ensemble import HEADER_PREFIX, PRESETS

    data = b"the same bits under both presets, " * 12
    with Compressor(model=tiny_gguf, route="llm", threads=1, check_every=4096) as c:  # as codec preset 1
        c.params = dataclasses.replace(c.params, ensemble=PRESETS[2])
        current = c.compress(data)
        c.params = dataclasses.replace(c.params, ensemble=PRESETS[1])
        old = c.compress(data)
        assert container.read_header(old)[0].params["ensemble"] == 1
        assert c.decompress(old) == data
        assert container.read_archive(old).segments == container.read_archive(current).segments
        header, _ = container.read_header(old)
        full = {**api.CODEC_PRESETS[1], "n_vocab": 559,
                **{HEADER_PREFIX + k: v for k, v in dataclasses.asdict(PRESETS[1]).items() if k != "max_table_bits"}}
        legacy = dataclasses.replace(header, params=full)
        assert check_header(legacy).ensemble == PRESETS[1]
        rewritten = container.write_archive(container.Archive(legacy, container.read_archive(old).segments))
        assert c.decompress(rewritten) == data


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"codec": 3, "n_vocab": 559}, ModelMismatchError, "codec preset 3; this nczip knows \\[1, 2, 11, 12,"),
        ({"codec": 1, "window": 64, "n_vocab": 559}, FormatError, "codec preset 1 and also window"),
    ],
)
def test_unknown_or_mixed_codec_presets_are_refused(params, error, message):
    header = container.Header("llama.cpp-fa", "m.gguf", bytes(32), 1, bytes(32), params)
    with pytest.raises(error, match=message):
        check_header(header)


def test_archive_of_another_model_is_refused_before_decoding(tiny_gguf, tiny_gguf_other):
    with Compressor(model=tiny_gguf_other, route="llm", threads=1) as other:
        archive = other.compress(b"some text to code")
    with Compressor(model=tiny_gguf, route="llm", threads=1) as mine:
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
    """Wraps a model and records every call that shapes its computation, to compare encoder
    and decoder."""

    def __init__(self, model):
        self.model = model
        self.calls: list[tuple] = []
        for name in ("identity", "n_vocab", "bos", "n_batch"):
            setattr(self, name, getattr(model, name))

    n_ctx = property(lambda self: self.model.n_ctx)
    n_lanes = property(lambda self: self.model.n_lanes)

    def configure(self, n_ctx, n_lanes):
        self.calls.append(("configure", n_ctx, n_lanes))
        self.model.configure(n_ctx, n_lanes)

    def reset(self):
        self.calls.append(("reset",))
        self.model.reset()

    def clear_lane(self, lane):
        self.calls.append(("clear_lane", lane))
        self.model.clear_lane(lane)

    def copy_lane(self, source, target):
        self.calls.append(("copy_lane", source, target))
        self.model.copy_lane(source, target)

    def shift_lane(self, lane, start, end):
        self.calls.append(("shift_lane", lane, start, end))
        self.model.shift_lane(lane, start, end)

    def evaluate(self, tokens, start, lane=0):
        self.calls.append(("evaluate", tuple(tokens), start, lane))
        return self.model.evaluate(tokens, start, lane)

    def evaluate_rows(self, tokens, positions, lanes):
        self.calls.append(("rows", tuple(tokens), tuple(positions), tuple(lanes)))
        return self.model.evaluate_rows(tokens, positions, lanes)


@pytest.mark.parametrize("slide", [SLIDE_RESTART, SLIDE_SHIFT])
@pytest.mark.parametrize("lanes", [1, 3])
def test_encoder_and_decoder_make_identical_model_calls(tiny_model, lanes, slide):
    ids = [tiny_model.byte_token(b) for b in b"abcdefghijklmnopqrstuvwxyz" * 3]
    params = CodecParams(window=20, keep=7, lanes=lanes, lane_tokens=10, primer=0, slide=slide)
    enc, dec = RecordingModel(tiny_model), RecordingModel(tiny_model)
    payload = encode_tokens(enc, ids, params)
    assert decode_tokens(dec, payload, len(ids), params) == ids
    assert enc.calls == dec.calls
    assert ("configure", 20, lanes) in enc.calls
    slid = "shift_lane" if slide == SLIDE_SHIFT else "clear_lane"
    assert len({c[1] for c in enc.calls if c[0] == slid}) == lanes  # every lane slid
    assert not any(c[0] == {"shift_lane": "clear_lane", "clear_lane": "shift_lane"}[slid] for c in enc.calls)
    if lanes > 1:  # lockstep: one call carries a row of every lane
        assert ("rows", tuple(ids[i * 26] for i in range(3)), (1, 1, 1), (0, 1, 2)) in enc.calls


def test_primer_is_coded_on_lane_0_then_shared_by_every_lane(tiny_model):
    ids = [tiny_model.byte_token(b) for b in b"abcdefghijklmnopqrstuvwxyz" * 3]
    params = CodecParams(window=32, keep=10, lanes=3, lane_tokens=10, primer=5)
    enc, dec = RecordingModel(tiny_model), RecordingModel(tiny_model)
    payload = encode_tokens(enc, ids, params)
    assert decode_tokens(dec, payload, len(ids), params) == ids
    assert enc.calls == dec.calls
    shaping = [c for c in enc.calls if c[0] in ("rows", "copy_lane")]
    # lane 0 alone: BOS, then primer tokens 0..3; then lanes 1 and 2 get lane 0's context and
    # every lane reads the primer's last token at position 5.
    assert shaping[:5] == [("rows", (tiny_model.bos,), (0,), (0,))] + [("rows", (ids[i],), (i + 1,), (0,)) for i in range(4)]
    assert shaping[5:7] == [("copy_lane", 0, 1), ("copy_lane", 0, 2)]
    assert shaping[7] == ("rows", (ids[4],) * 3, (5, 5, 5), (0, 1, 2))
    # then lane j codes tokens 5 + 73 j / 3 on: lane 0 goes on where the primer stopped
    assert shaping[8] == ("rows", (ids[5], ids[29], ids[53]), (6, 6, 6), (0, 1, 2))


def test_lanes_keep_bos_and_the_last_tokens(tiny_model):
    rec = RecordingModel(tiny_model)
    rec.configure(6, 2)
    lanes = LockstepLanes(rec, window=6, keep=3, n_lanes=2)
    lanes.start()
    for t in range(10, 20):
        lanes.advance([0, 1], [t, t + 100])
    evaluations = [c for c in rec.calls if c[0] in ("rows", "evaluate", "clear_lane")]
    # BOS in both lanes, then one row per lane until 6 positions are filled, then each lane
    # restarts as BOS + its last 3 tokens (a call of its own), before the remaining rows.
    assert evaluations[0] == ("rows", (tiny_model.bos, tiny_model.bos), (0, 0), (0, 1))
    assert evaluations[1:6] == [("rows", (t, t + 100), (p, p), (0, 1)) for p, t in zip(range(1, 6), range(10, 15))]
    assert evaluations[6:10] == [
        ("clear_lane", 0),
        ("evaluate", (tiny_model.bos, 13, 14, 15), 0, 0),
        ("clear_lane", 1),
        ("evaluate", (tiny_model.bos, 113, 114, 115), 0, 1),
    ]
    assert evaluations[10] == ("rows", (16, 116), (4, 4), (0, 1))


def test_shifting_lanes_keep_bos_and_the_last_tokens(tiny_model):
    rec = RecordingModel(tiny_model)
    rec.configure(6, 2)
    lanes = LockstepLanes(rec, window=6, keep=3, n_lanes=2, shift=True)
    lanes.start()
    for t in range(10, 20):
        lanes.advance([0, 1], [t, t + 100])
    evaluations = [c for c in rec.calls if c[0] in ("rows", "evaluate", "clear_lane", "shift_lane")]
    # Positions 0..5 hold BOS and tokens 10..14; to code on, each lane drops positions 1..3
    # (tokens 10..12) and its tokens 13, 14 move to positions 1, 2: the token just coded (15)
    # is then the lane's row at position 3, in the same call as the other lane's, no prefill.
    assert evaluations[1:6] == [("rows", (t, t + 100), (p, p), (0, 1)) for p, t in zip(range(1, 6), range(10, 15))]
    assert evaluations[6:9] == [("shift_lane", 0, 1, 4), ("shift_lane", 1, 1, 4), ("rows", (15, 115), (3, 3), (0, 1))]
    assert evaluations[9:11] == [("rows", (16, 116), (4, 4), (0, 1)), ("rows", (17, 117), (5, 5), (0, 1))]
    assert evaluations[11:14] == [("shift_lane", 0, 1, 4), ("shift_lane", 1, 1, 4), ("rows", (18, 118), (3, 3), (0, 1))]


def test_a_shifted_lane_holds_bos_and_its_last_tokens_at_the_new_positions(tiny_gguf):
    """After llama.cpp's shift, the lane's cache holds positions 0..keep-1 only, and a call at
    position keep is accepted (llama.cpp refuses positions that do not follow on)."""
    from nczip.models.llama_cpp import LlamaCppModel
    from nczip.models.registry import resolve_model

    model = LlamaCppModel(resolve_model(str(tiny_gguf)), n_ctx=64, threads=1)
    try:
        model.configure(16, 1)
        lanes = LockstepLanes(model, window=16, keep=5, shift=True)
        lanes.start()
        for t in range(40, 55):  # BOS + 15 tokens fill the window
            lanes.advance([0], [t])
        lib = model._lib
        assert (lib.llama_memory_seq_pos_min(model._memory, 0), lib.llama_memory_seq_pos_max(model._memory, 0)) == (0, 15)
        (logits,) = lanes.advance([0], [55])
        assert (lib.llama_memory_seq_pos_min(model._memory, 0), lib.llama_memory_seq_pos_max(model._memory, 0)) == (0, 5)
        assert np.isfinite(logits).all()
    finally:
        model.close()


def test_logits_after_a_slide_match_a_fresh_context(tiny_model):
    """The slide's prefill must give the same floats as evaluating those tokens from scratch,
    although the lane's old cells held other data."""
    tiny_model.configure(8, 1)
    lanes = LockstepLanes(tiny_model, window=8, keep=3)  # restarting, not shifting
    lanes.start()
    for t in range(20, 28):  # BOS + 7 tokens fill the window; the 8th token slides it
        (logits,) = lanes.advance([0], [t])
    slid = np.array(logits, copy=True)
    tiny_model.configure(8, 2)  # a new, never used context
    tiny_model.configure(8, 1)
    fresh = np.array(tiny_model.evaluate([tiny_model.bos, 25, 26, 27], 0), copy=True)
    assert np.array_equal(slid, fresh)


def test_a_reused_context_gives_the_floats_of_a_fresh_one(tiny_gguf):
    """Lanes are cleared without zeroing their cells; old contents must not leak into results."""
    data = b"Reused contexts must decode like fresh ones, bit for bit. " * 30
    params = dict(model=tiny_gguf, route="llm", threads=1, window=64, lanes=4, lane_tokens=64)
    with Compressor(**params) as c:
        c.compress(b"Something else first, to leave the cells dirty. " * 40)
        reused = c.compress(data)
    with Compressor(**params) as c:
        fresh = c.compress(data)
    assert reused == fresh


@pytest.mark.parametrize("window,keep", [(3, 1), (16, 1), (16, 14), (100, 50)])
def test_window_settings_round_trip(tiny_gguf, window, keep):
    data = b"Sliding windows of every shape must decode exactly. " * 4
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=window, keep=keep) as c:
        assert c.decompress(c.compress(data)) == data


# The SHA-256 of the tiny model's archive of a fixed input, on the machine that pinned it. Any
# change to the coder, the quantizer, the model-call schedule or the container shows up here
# (update the constant only with a deliberate format change). ggml picks its kernels by CPU
# features, so on a CPU with other features the floats, and so the archive, may legitimately
# differ: the test then skips, saying so; the coder and container goldens in test_cdf.py and
# test_container.py stay CPU-independent.
# (backend id, slide): SHA-256 of the archive they write. The current default, and earlier ones
# whose archives must keep decoding, so they must keep coding the same bits.
PINNED_ARCHIVE_SHA256 = {
    ("llama.cpp-fa2-sw", "shift"): "e335afa33df7886a832f487a19dd47cf671cd0ed6761b9d6028beb8fddc735cf",
    ("llama.cpp-fa2-sw", "restart"): "7e02da4cbf97c08e8e86735a2ef2367466a3e53ca125fcb9e602b9d90666eab1",
    ("llama.cpp-fa2", "restart"): "e7a30c80feb709408bf70c714d1c656ae8f0a1c7d3cd148a0b380d7409b29030",
}
# The same archives' coded payloads alone: a change of the container's form leaves them as they are.
PINNED_PAYLOAD_SHA256 = {
    ("llama.cpp-fa2-sw", "shift"): "ee55b1c53dae29ada25abaf1b52c8b7344392b5fa7f2b9ed707fdf3136b5468c",
    ("llama.cpp-fa2-sw", "restart"): "0086986f15b006a9781e3ae8abbf5fc66295f843ce1126779718cc4801f94549",
    ("llama.cpp-fa2", "restart"): "0086986f15b006a9781e3ae8abbf5fc66295f843ce1126779718cc4801f94549",
}
PINNED_CPU_FLAGS_SHA256 = "6a93d771884cba54d837828ce732aaad0bec1243d7fa6d288a3359b8166e7e4a"  # the dev machine of 2026-11-29, 2 cores


def _cpu_flags_digest() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()


@pytest.mark.parametrize("backend_id, slide", sorted(PINNED_ARCHIVE_SHA256))
def test_pinned_archive_of_a_fixed_input(tiny_gguf, backend_id, slide):
    if _cpu_flags_digest() != PINNED_CPU_FLAGS_SHA256:
        pytest.skip("this CPU's features differ from the pinning machine's: llama.cpp may compute other floats")
    data = CASES["ascii"] * 3 + CASES["multilingual_utf8"]
    settings = dict(threads=1, window=32, lanes=3, lane_tokens=16, primer=8, llm_only=True, slide=slide)
    with Compressor(model=tiny_gguf, route="llm", backend_id=backend_id, **settings) as c:
        archive = c.compress(data)
        assert c.decompress(archive) == data
    assert container.read_header(archive)[0].backend == backend_id
    payloads = b"".join(s.payload for s in container.read_archive(archive).segments)
    assert hashlib.sha256(payloads).hexdigest() == PINNED_PAYLOAD_SHA256[backend_id, slide]
    assert hashlib.sha256(archive).hexdigest() == PINNED_ARCHIVE_SHA256[backend_id, slide]


def test_legacy_llama_archives_decode_as_they_were_coded(tiny_gguf):
    """Archives of the previous llama.cpp id ("llama.cpp-fa", no padding of scattered lanes) still
    decode: one lane never makes a scattered call, so the bits are the same under both ids."""
    data = b"an archive from before the padding of scattered lanes\n" * 3
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=64, backend="llama") as c:
        archive = container.read_archive(c.compress(data))
        old = container.write_archive(dataclasses.replace(archive, header=dataclasses.replace(archive.header, backend="llama.cpp-fa")))
        assert c.decompress(old) == data
        assert c.model.identity.backend == "llama.cpp-fa"
        again = container.read_header(c.compress(data))[0]  # compressing goes back to the current id
        assert again.backend == "llama.cpp-fa2-sw"
