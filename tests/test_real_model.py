"""The default model (Gemma-3-270M, installed from PyPI) end to end, on short inputs.

These are the tests that prove the product works as shipped; the tiny model covers the same
paths in milliseconds elsewhere. The model package is a hard dependency, so nothing here skips
when it is missing: a broken install must fail.
"""
from __future__ import annotations

import dataclasses
import os

import pytest

from corpora import locate
from corpora.samples import edge_cases
from nczip import container
from nczip.api import Compressor

pytestmark = pytest.mark.real_model

CASES = edge_cases()


@pytest.fixture(scope="module")
def gemma():
    with Compressor(threads=2) as compressor:
        yield compressor


def alice_slice(size: int) -> bytes:
    path = locate.find("alice29.txt")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("alice29.txt not found in $NCZIP_CORPORA or ../shared/corpora")
        pytest.skip("alice29.txt not found in $NCZIP_CORPORA or ../shared/corpora")
    data = path.read_bytes()
    return data[len(data) // 3 : len(data) // 3 + size]  # from the middle: no Gutenberg header


@pytest.mark.parametrize("name", sorted(CASES))
def test_edge_cases_round_trip(gemma, name):
    data = CASES[name]
    assert gemma.decompress(gemma.compress(data)) == data


def test_alice_slice_round_trips_close_to_the_ideal_code_length(gemma):
    data = alice_slice(20_000)
    ensemble = gemma.params.ensemble
    try:
        gemma.params = dataclasses.replace(gemma.params, ensemble=None)  # --llm-only
        archive = gemma.compress(data, measure_ideal=True)
        llm_only_bits = len(container.read_archive(archive).segments[0].payload) * 8
        stats = gemma.last_stats  # (the plain path's round trips: the tiny-model tests)
    finally:
        gemma.params = dataclasses.replace(gemma.params, ensemble=ensemble)
    # The model must beat general-purpose compressors by far (gzip -9: ~2.9 bpb on this text)...
    assert llm_only_bits / len(data) < 1.3
    # ...and the coder + quantizer must cost at most 0.2% above -sum log2 p (plus the flush).
    assert llm_only_bits <= stats.ideal_bits * 1.002 + 64
    # The ensemble may only help: on prose it has little to add, but it must not cost bits.
    archive = gemma.compress(data)
    assert gemma.decompress(archive) == data
    assert len(container.read_archive(archive).segments[0].payload) * 8 <= llm_only_bits


def test_identical_archives_and_thread_independence():
    # One lane past 512 cells: where flash attention would split a lone query between threads.
    data = alice_slice(2_600)
    with Compressor(threads=1) as one, Compressor(threads=2) as two:
        archive = one.compress(data)
        assert container.read_archive(archive).segments[0].token_count > 600
        assert one.compress(data) == archive
        assert two.compress(data) == archive
        assert two.decompress(archive) == data


def test_lanes_are_thread_independent_on_gemma():
    """Lockstep rows, the primer's copied cells and per-lane contexts: the same bits with 1 and
    2 threads (a 3-lane split of a short slice, so that it stays fast)."""
    data = alice_slice(1_500)
    options = dict(lanes=3, lane_tokens=64, primer=32)
    with Compressor(threads=1, **options) as one, Compressor(threads=2, **options) as two:
        archive = one.compress(data)
        assert container.read_archive(archive).segments[0].token_count > 32 + 3 * 64
        assert two.compress(data) == archive
        assert two.decompress(archive) == data


def test_shifted_windows_are_thread_independent_on_gemma():
    """Windows that slide by shifting (llama.cpp re-rotates the kept keys in a graph of its own)
    with 3 lanes in a short window, and with one lane in a window larger than Gemma's 1,024-cell
    sliding-window ring (where llama_memory_can_shift says no): the same bits with 1 and 2
    threads, and the archives decode."""
    cases = [
        (alice_slice(3_600), dict(lanes=3, lane_tokens=64, primer=32, window=256), 32 + 3 * 300),
        (alice_slice(5_200), dict(lanes=1, window=1100), 1_400),
    ]
    for data, options, tokens in cases:
        with Compressor(threads=1, slide="shift", **options) as one, Compressor(threads=2, slide="shift", **options) as two:
            archive = one.compress(data)
            assert container.read_archive(archive).segments[0].token_count > tokens  # every lane shifts
            assert container.read_header(archive)[0].params["slide"] == 1
            assert two.compress(data) == archive
            assert two.decompress(archive) == data


def _slice_ending_on_lanes_1_and_3(primer: int, lanes: int) -> tuple[bytes, int]:
    """A slice of alice29 whose token count leaves lanes 1 and 3 of 4 one token longer, so the
    segment's last step has rows for those two lanes only."""
    from nczip import tokens
    from nczip.models.llama_cpp import load_vocab_only
    from nczip.models.registry import default_model

    vocab, close = load_vocab_only(default_model())
    try:
        for size in range(2_400, 2_800, 7):
            data = alice_slice(size)
            count = len(tokens.tokenize_exact(data, vocab))
            if (count - primer) % lanes == 2:
                return data, count
    finally:
        close()
    raise AssertionError("no slice in range has the token count wanted")


def test_uneven_lanes_past_512_cells_are_thread_independent_on_gemma():
    """Found on enwik8's first MB (an archive coded with 2 threads failed to decode with 1 at
    its last step, lanes 1 and 3): llama.cpp ran that call as two lone queries over > 512
    cells, which flash attention splits by thread count. The primer puts every lane past 512
    cells, and the slice makes the last step's lanes 1 and 3."""
    from nczip import codec

    primer, lanes = 500, 4
    data, count = _slice_ending_on_lanes_1_and_3(primer, lanes)
    options = dict(lanes=lanes, lane_tokens=20, primer=primer)
    with Compressor(threads=1, **options) as one, Compressor(threads=2, **options) as two:
        archive = one.compress(data)
        segment = container.read_archive(archive).segments[0]
        assert segment.token_count == count
        assert codec.lane_plan(count, one.params) == (primer, lanes)
        bounds = codec.lane_bounds(count, primer, lanes)
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        assert [i for i, n in enumerate(lengths) if n == max(lengths)] == [1, 3]
        assert two.compress(data) == archive
        assert two.decompress(archive) == data
        assert one.decompress(archive) == data


def test_own_head_gives_llama_cpp_s_logits_on_gemma():
    """llama.cpp-fa2-h8 computes Gemma's logits itself from the final hidden states: they must be
    llama.cpp's up to rounding (8-bit activations either way), across lanes and single rows."""
    import numpy as np

    from nczip.models.llama_cpp import BACKEND_ID, HEAD_BACKEND_ID, LlamaCppModel
    from nczip.models.registry import default_model

    model = LlamaCppModel(default_model(), n_ctx=1024, threads=2)
    try:
        assert model.default_backend_id == HEAD_BACKEND_ID
        model.configure(1024, 3)
        toks = model.tokenize(alice_slice(600))[:100]
        logits = {}
        for backend_id in (HEAD_BACKEND_ID, BACKEND_ID):
            model.use_backend_id(backend_id)
            model.reset()
            rows = [np.array(model.evaluate([model.bos, *toks[:60]], 0, lane), copy=True) for lane in range(3)]
            rows.append(np.array(model.evaluate_rows([toks[60], toks[61]], [61, 61], [0, 2]), copy=True))
            logits[backend_id] = np.concatenate([np.atleast_2d(r) for r in rows])
    finally:
        model.close()
    ours, theirs = logits[HEAD_BACKEND_ID], logits[BACKEND_ID]
    assert np.max(np.abs(ours - theirs)) < 0.02 * np.max(np.abs(theirs))
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).mean() >= 0.8


def test_a_source_tree_tar_with_a_png_beats_xz(gemma):
    """Issue 5: the tree's text goes to the model, the PNG and the tar padding to the plain
    codecs, and the whole is smaller than `xz -9` of the same tar."""
    import lzma

    from corpora.samples import small_source_tree

    data = small_source_tree()
    archive = gemma.compress(data)
    methods = [s.method for s in container.read_archive(archive).segments]
    assert methods[0] == container.Method.LLM and len(methods) == 2, methods
    assert len(archive) < len(lzma.compress(data, preset=9))
    assert gemma.decompress(archive) == data
