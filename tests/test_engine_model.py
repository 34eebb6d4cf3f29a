"""nczip's engine as a model (models/engine.py) on the tiny random Gemma-3 GGUF: its logits do
not depend on the kernel, the thread count or how rows share a call; the encoder's prefill walk
codes the very archive the decoder's lockstep walk reads; and a pinned archive holds on every
machine (the engine's arithmetic is nczip's own, so unlike llama.cpp's pins this one never skips).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from corpora.samples import edge_cases
from nczip import _cext, codec, container
from nczip.api import Compressor
from nczip.errors import NczipError
from nczip.models import engine
from nczip.models.engine import EngineModel
from nczip.models.registry import model_from_path
from nczip.params import CodecParams, SLIDE_RESTART, SLIDE_SHIFT

KERNELS = _cext.engine_kernels()  # the portable loops and every SIMD level this CPU runs
BEST = _cext.engine_best_kernel()
TEXT = (b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
        b"nothing to do: once or twice she had peeped into the book her sister was reading. ") * 8


@pytest.fixture(scope="module")
def model(tiny_gguf):
    m = EngineModel(model_from_path(tiny_gguf), n_ctx=256, threads=2)
    yield m
    m.close()


def sequences(model, lanes, length):
    ids = model.tokenize(TEXT)
    return [([model.bos] + ids[7 * lane :])[:length] for lane in range(lanes)]


def logits_lockstep(model, seqs):
    model.configure(256, len(seqs))
    steps = [np.array(model.evaluate_rows([s[i] for s in seqs], [i] * len(seqs), range(len(seqs))))
             for i in range(len(seqs[0]))]
    return np.stack(steps, axis=1)  # lanes x positions x vocab


def logits_alone(model, seqs):
    model.configure(256, len(seqs))
    return np.stack([np.stack([np.array(model.evaluate_rows([s[i]], [i], [lane])[0]) for i in range(len(s))])
                     for lane, s in enumerate(seqs)])


def logits_prefilled(model, seqs, block):
    model.configure(256, len(seqs))
    out = []
    for lane, s in enumerate(seqs):
        hidden = [np.array(model.hidden_rows(s[a : a + block], range(a, min(a + block, len(s))), [lane] * len(s[a : a + block])))
                  for a in range(0, len(s), block)]
        out.append(np.array(model.head(np.concatenate(hidden))))
    return np.stack(out)


def bits(x):
    return np.ascontiguousarray(x).view(np.uint32)


def test_logits_depend_on_nothing_but_the_lane(model):
    """The same bits alone, in lockstep with other lanes, in prefill blocks of any size, with every
    kernel this CPU runs and with 1 and 2 threads: the engine's batch invariance."""
    seqs = sequences(model, 3, 90)  # past the tiny model's 32-token sliding window
    reference = logits_lockstep(model, seqs)
    assert np.isfinite(reference).all() and reference.std() > 0.1
    for kernel in KERNELS:
        model.kernel = kernel
        for threads in (1, 2):
            model._engine.set_threads(threads)
            assert np.array_equal(bits(logits_lockstep(model, seqs)), bits(reference)), (kernel, threads)
        assert np.array_equal(bits(logits_alone(model, seqs)), bits(reference)), kernel
        for block in (1, 7, 64):
            assert np.array_equal(bits(logits_prefilled(model, seqs, block)), bits(reference)), (kernel, block)
    model.kernel = BEST
    model._engine.set_threads(2)


def test_a_copied_lane_continues_as_the_original(model):
    seqs = sequences(model, 1, 60)
    model.configure(256, 3)
    for i in range(40):
        model.evaluate_rows([seqs[0][i]], [i], [0])
    model.copy_lane(0, 2)
    a = [np.array(model.evaluate_rows([seqs[0][i]], [i], [0])[0]) for i in range(40, 60)]
    b = [np.array(model.evaluate_rows([seqs[0][i]], [i], [2])[0]) for i in range(40, 60)]
    assert np.array_equal(bits(np.stack(a)), bits(np.stack(b)))


def test_rows_must_continue_their_lane(model):
    model.configure(256, 2)
    model.evaluate_rows([model.bos], [0], [0])
    with pytest.raises(ValueError, match="lane 0 is at position 1, the row says 3"):
        model.evaluate_rows([5], [3], [0])
    with pytest.raises(ValueError, match="lane 2 out of range"):
        model.evaluate_rows([5], [0], [2])
    with pytest.raises(ValueError, match="token .* out of range"):
        model.evaluate_rows([10**6], [1], [0])
    with pytest.raises(ValueError, match="more than 128 rows"):
        model.hidden_rows([5] * 129, range(1, 130), [0] * 129)
    with pytest.raises(ValueError, match="cannot drop"):
        model.shift_lane(0, 1, 5)  # the lane holds one position


@pytest.mark.parametrize("slide", [SLIDE_SHIFT, SLIDE_RESTART])
@pytest.mark.parametrize("lanes", [1, 2, 5, 16])
def test_the_encoders_prefill_codes_the_archive_the_decoders_lockstep_reads(model, monkeypatch, slide, lanes):
    """codec._walk_prefill (encoder) against codec._walk (LockstepLanes, the decoder's): windows
    of 24 tokens slide every few tokens, lanes 1 to 16, shifting and restarting."""
    ids = model.tokenize(TEXT * 2)
    params = CodecParams(window=24, keep=18 if slide == SLIDE_SHIFT else 12, slide=slide, lanes=lanes,
                         lane_tokens=20, primer=8, check_every=7)
    prefilled = codec.encode_tokens(model, ids, params)
    monkeypatch.setattr(EngineModel, "batch_invariant", False)
    stepped = codec.encode_tokens(model, ids, params)
    assert prefilled == stepped
    assert codec.decode_tokens(model, prefilled, len(ids), params) == ids
    assert codec.lane_plan(len(ids), params)[1] == min(lanes, (len(ids) - 8) // 20)


def test_every_edge_case_round_trips_through_the_engine(tiny_gguf):
    with Compressor(model=tiny_gguf, route="llm", threads=2, window=64, backend="engine") as c:
        for name, data in edge_cases().items():
            archive = c.compress(data)
            if data:
                assert container.read_header(archive)[0].backend == engine.BACKEND_ID, name
            assert c.decompress(archive) == data, name


# The tiny model's archive of a fixed input. The engine computes the same bits on every machine,
# so this pin holds everywhere: CI checks it on whatever CPU it gets. Change it only with a
# deliberate change of the engine's arithmetic (which needs a new backend id) or of the format.
PINNED = {
    SLIDE_SHIFT: "7199fc09c467ba7c29bb87beaec3332d828a2e67294c6ba5ec568791083006cc",
    SLIDE_RESTART: "5e752324ba877856f60b4c3596755c2360ec5c5e5a7bfdda68a131b865dda88e",
}


@pytest.mark.parametrize("slide", ["shift", "restart"])
def test_pinned_archive_holds_on_every_machine(tiny_gguf, slide):
    data = TEXT * 3 + "Größe, 大きさ, размер.\n".encode()
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=48, lanes=3, lane_tokens=40, primer=8,
                    slide=slide) as c:
        archive = c.compress(data)
        assert c.decompress(archive) == data
    assert container.read_header(archive)[0].backend == engine.BACKEND_ID
    assert hashlib.sha256(archive).hexdigest() == PINNED[SLIDE_SHIFT if slide == "shift" else SLIDE_RESTART]


def test_the_kernel_can_be_forced_from_the_environment(tiny_gguf, monkeypatch):
    monkeypatch.setenv(engine.KERNEL_ENV, "portable")
    m = EngineModel(model_from_path(tiny_gguf), n_ctx=64, threads=1)
    assert m.kernel == 0
    monkeypatch.setenv(engine.KERNEL_ENV, "avx9000")
    with pytest.raises(NczipError, match="NCZIP_KERNEL must be one of portable, avx2, avx512"):
        EngineModel(model_from_path(tiny_gguf), n_ctx=64, threads=1)


def test_the_engine_names_what_it_cannot_run(tmp_path, tiny_gguf):
    import gguf

    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert not engine.supports(path) and engine.supports(tiny_gguf)
    with pytest.raises(NczipError, match="'llama' model; nczip's engine runs gemma3 .*--backend llama"):
        EngineModel(model_from_path(path), n_ctx=64, threads=1)
