"""The ensemble (cext/ensemble.c): each cheap model learns, the mixed table is always a valid
CDF, and encoder and decoder stay in step."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from nczip import _cext
from nczip.ensemble import EnsembleParams, new_ensemble, table_bits

VOCAB = 4096
PRECISION = 31


def _block_costs(params: EnsembleParams, block: list[int], logits: np.ndarray) -> tuple[float, float]:
    """Bits per token of a block, then of the same block again right after it."""
    doc = block + block
    ens = new_ensemble(params, VOCAB, 1, len(doc))
    bits = [PRECISION - math.log2(ens.measure(0, i, logits, t, PRECISION)) for i, t in enumerate(doc)]
    n = len(block)
    return sum(bits[:n]) / n, sum(bits[n:]) / n


@pytest.fixture(scope="module")
def random_block():
    # 2 KB of random bytes as byte-valued tokens: nothing to predict the first time.
    return np.random.default_rng(1).integers(0, 256, 2048).tolist()


FLAT = np.zeros(VOCAB, np.float32)  # an LLM that knows nothing: 12 bits per token


def test_a_repeated_2kb_block_costs_under_005_bpb_the_second_time(random_block):
    first, second = _block_costs(EnsembleParams(), random_block, FLAT)
    assert first > 11.5  # random tokens stay expensive: the models do not invent information
    assert second < 0.05


@pytest.mark.parametrize(
    "only, limit",
    [({"match_min": 0}, 0.5), ({"orders": 0}, 0.1)],
    ids=["ngrams_alone", "match_alone"],
)
def test_each_model_alone_learns_the_repeat(random_block, only, limit):
    first, second = _block_costs(dataclasses.replace(EnsembleParams(), **only), random_block, FLAT)
    assert first > 11.5 and second < limit


def test_without_cheap_models_the_llm_alone_is_coded(random_block):
    params = EnsembleParams(orders=0, match_min=0, mix_rate=0, bias_rate=0)
    first, second = _block_costs(params, random_block, FLAT)
    assert first == pytest.approx(12, abs=1e-3) and second == pytest.approx(12, abs=1e-3)


def test_the_bias_head_learns_the_documents_token_frequencies():
    # Tokens drawn from 16 of 4096: the bias head alone should find them.
    doc = np.random.default_rng(2).integers(0, 16, 3000).tolist()
    params = EnsembleParams(orders=0, match_min=0, bias_rate=20000)
    ens = new_ensemble(params, VOCAB, 1, len(doc))
    bits = [PRECISION - math.log2(ens.measure(0, i, FLAT, t, PRECISION)) for i, t in enumerate(doc)]
    assert sum(bits[-1000:]) / 1000 < 5.5  # log2(16) = 4 is the limit; 12 without the head


def test_a_confident_llm_is_not_spoiled(random_block):
    # The LLM predicts every token of a fresh block well; the ensemble must stay close to it.
    logits = np.zeros(VOCAB, np.float32)
    doc = np.random.default_rng(3).integers(0, VOCAB, 3000).tolist()
    ens = new_ensemble(EnsembleParams(), VOCAB, 1, len(doc))
    llm = mixed = 0.0
    for i, t in enumerate(doc):
        logits[:] = 0
        logits[t] = 12.0  # p(t) = e^12 / (e^12 + 4095) = 0.98
        llm += _cext.ideal_bits(logits, t)
        mixed += PRECISION - math.log2(ens.measure(0, i, logits, t, PRECISION))
    assert mixed < llm * 1.05 + 30


logit_values = st.one_of(
    st.floats(-60, 60, width=32),
    st.sampled_from([float("-inf"), float("nan"), float("inf"), 0.0]),
)


@settings(max_examples=examples(60), deadline=None)
@given(
    vocab=st.integers(1, 64),
    steps=st.lists(st.tuples(st.lists(logit_values, min_size=64, max_size=64), st.integers(0, 63)), min_size=1, max_size=40),
    precision=st.integers(20, 31),
    orders=st.integers(0, 6),
    match_min=st.sampled_from([0, 2, 3]),
)
def test_mixed_table_is_always_a_valid_cdf(vocab, steps, precision, orders, match_min):
    params = EnsembleParams(orders=orders, match_min=match_min, bias_rate=50000, mix_rate=4000)
    ens = new_ensemble(params, vocab, 1, len(steps))
    out = np.zeros(vocab, np.uint32)
    for i, (values, token) in enumerate(steps):
        logits = np.array(values[:vocab], np.float32)
        freq = ens.measure(0, i, logits, token % vocab, precision, out)
        assert out.min() >= 1
        assert int(out.sum(dtype=np.uint64)) == 1 << precision
        assert freq == out[token % vocab]


@settings(max_examples=examples(40), deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lanes=st.integers(1, 4),
    length=st.integers(1, 120),
    primer=st.integers(0, 10),
)
def test_decoder_follows_the_encoder_over_lanes(seed, lanes, length, primer):
    rng = np.random.default_rng(seed)
    vocab = 50
    doc = rng.integers(0, 6, length).tolist()  # few symbols: the cheap models have work to do
    primer = min(primer, length)
    # The codec's order: the primer on lane 0, fan-out, then lanes in lockstep.
    bounds = [primer + j * (length - primer) // lanes for j in range(lanes + 1)]
    order = [(0, i) for i in range(primer)] + [None]
    for s in range(length):
        order += [(j, bounds[j] + s) for j in range(lanes) if bounds[j] + s < bounds[j + 1]]
    rows = {i: rng.normal(0, 2, vocab).astype(np.float32) for i in range(length)}
    enc_ens, dec_ens = (new_ensemble(EnsembleParams(match_min=2), vocab, lanes, length) for _ in range(2))
    encoder = _cext.Encoder()
    for item in order:
        if item is None:
            enc_ens.fan_out()
        else:
            enc_ens.encode(encoder, item[0], item[1], rows[item[1]], doc[item[1]], PRECISION)
    decoder = _cext.Decoder(encoder.finish())
    out = [None] * length
    for item in order:
        if item is None:
            dec_ens.fan_out()
        else:
            out[item[1]] = dec_ens.decode(decoder, item[0], item[1], rows[item[1]], PRECISION)
    assert out == doc


def test_bad_calls_raise_and_disable_the_ensemble():
    ens = new_ensemble(EnsembleParams(), 10, 2, 5)
    logits = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="10 entries"):
        ens.measure(0, 0, np.zeros(9, np.float32), 1, 31)
    with pytest.raises(ValueError, match="out of range"):
        ens.measure(2, 0, logits, 1, 31)  # lane 2 of 2
    with pytest.raises(ValueError, match="unusable"):
        ens.measure(0, 0, logits, 1, 31)
    ens = new_ensemble(EnsembleParams(), 10, 2, 5)
    with pytest.raises(ValueError, match="out of range"):
        ens.measure(0, 5, logits, 1, 31)  # position 5 of 5


@pytest.mark.parametrize(
    "field, value",
    [("orders", 7), ("match_min", 1), ("match_min", 33), ("mix_rate", -1), ("w_ngram", -1), ("bias_rate", 1 << 21),
     ("max_table_bits", 9), ("max_table_bits", 21)],
)
def test_parameters_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        EnsembleParams(**{field: value})


def test_table_sizes_follow_the_token_count_up_to_the_cap():
    assert table_bits(1) == (10, 10)
    assert table_bits(45_000) == (17, 17)
    assert table_bits(10**7) == (20, 22)  # preset 1's cap
    assert table_bits(45_000, 18) == (17, 17)
    assert table_bits(300_000, 18) == (18, 20)  # a 1 MiB segment of English: 46 MiB of n-gram tables
    assert EnsembleParams().max_table_bits == 18


def _special_rows(rng, vocab: int, count: int) -> list[np.ndarray]:
    """Logit rows that exercise a split at the middle of the vocabulary: the maximum in either
    half, tied across the halves, NaN and infinities, and plain noise."""
    rows = []
    half = vocab // 2
    for i in range(count):
        row = rng.normal(0, 3, vocab).astype(np.float32)
        kind = i % 5
        if kind == 1:
            row[vocab - 7] = 40.0  # the maximum in the second half only
        elif kind == 2:
            row[half - 3] = row[half + 5] = row[vocab - 1] = 30.0  # first maximum in the first half
        elif kind == 3:
            row[rng.integers(0, vocab, 50)] = np.nan
            row[rng.integers(0, vocab, 50)] = -np.inf
        elif kind == 4:
            row[:half] = -np.inf  # nothing but -inf in the first half
        rows.append(row)
    return rows


@pytest.mark.parametrize("bias_rate", [8000, 0])
def test_a_helper_thread_gives_the_same_tables_and_bytes(bias_rate):
    """threads=2 splits the vocabulary passes (max, scores, quantizer, cumulative sum, bias
    step) between two threads: every table, every coded byte and the decoded tokens are those
    of one thread. Vocabulary sizes around the split threshold and not a multiple of 64."""
    rng = np.random.default_rng(7)
    for vocab in (16383, 40_001, 262_144):
        params = dataclasses.replace(EnsembleParams(match_min=2), bias_rate=bias_rate)
        rows = _special_rows(rng, vocab, 25)
        doc = [int(t) for t in rng.integers(0, 20, len(rows))]  # repeats: the cheap models join in
        doc[3] = vocab - 1
        one, two = new_ensemble(params, vocab, 2, len(doc)), new_ensemble(params, vocab, 2, len(doc), threads=2)
        assert (one.threads, two.threads) == (1, 2)
        t1, t2 = np.zeros(vocab, np.uint32), np.zeros(vocab, np.uint32)
        for i, (row, token) in enumerate(zip(rows, doc)):
            assert one.measure(i % 2, i, row, token, PRECISION, t1) == two.measure(i % 2, i, row, token, PRECISION, t2)
            assert np.array_equal(t1, t2), (vocab, i)
        streams = []
        for threads in (1, 2):
            ens, encoder = new_ensemble(params, vocab, 2, len(doc), threads=threads), _cext.Encoder()
            for i, (row, token) in enumerate(zip(rows, doc)):
                ens.encode(encoder, i % 2, i, row, token, PRECISION)
            streams.append(encoder.finish())
        assert streams[0] == streams[1]
        decoder, ens = _cext.Decoder(streams[0]), new_ensemble(params, vocab, 2, len(doc), threads=2)
        assert [ens.decode(decoder, i % 2, i, row, PRECISION) for i, row in enumerate(rows)] == doc


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_an_ensemble_with_a_helper_still_codes_in_a_forked_child():
    """fork copies only the calling thread: in the child the passes run in the caller (same bits)
    instead of waiting forever for a helper that does not exist there."""
    import os
    import signal

    vocab = 40_001
    rows = _special_rows(np.random.default_rng(3), vocab, 6)
    doc = [1, 2, 3, 1, 2, 3]
    ens = new_ensemble(EnsembleParams(), vocab, 1, 12, threads=2)
    encoder = _cext.Encoder()
    for i in range(3):
        ens.encode(encoder, 0, i, rows[i], doc[i], PRECISION)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: code the rest, send the bytes, leave without cleanup handlers
        os.close(read)
        signal.alarm(30)  # a child waiting for a helper that is not there dies: the test fails
        try:
            for i in range(3, 6):
                ens.encode(encoder, 0, i, rows[i], doc[i], PRECISION)
            os.write(write, encoder.finish())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_bytes = pipe.read()
    os.waitpid(pid, 0)
    for i in range(3, 6):
        ens.encode(encoder, 0, i, rows[i], doc[i], PRECISION)
    assert child_bytes == encoder.finish()


_TABLES_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_ensemble as t
from nczip.ensemble import EnsembleParams, new_ensemble
digest = hashlib.sha256()
rng = np.random.default_rng(11)
for vocab in (1001, 262_144):
    rows = t._special_rows(rng, vocab, 15)
    rows.append(np.full(vocab, -200.0, np.float32))  # every token 256+ bits below: the step limits
    rows[-1][5] = 0.0
    doc = [int(x) for x in rng.integers(0, 12, len(rows))]
    for bias_rate in (8000, 0):
        params = t.dataclasses.replace(EnsembleParams(match_min=2), bias_rate=bias_rate)
        for threads in (1, 2):
            ens, table = new_ensemble(params, vocab, 2, len(doc), threads=threads), np.zeros(vocab, np.uint32)
            for i, (row, token) in enumerate(zip(rows, doc)):
                ens.measure(i % 2, i, row, token, t.PRECISION, table)
                digest.update(table.tobytes())
print(digest.hexdigest())
"""


def test_vocabulary_passes_give_the_portable_loops_integers():
    """The AVX2 loops of the O(vocabulary) passes (cext/vocab_simd.h: gathers from the weight
    table) give the tables of the portable loops, which NCZIP_KERNEL=portable selects: every
    table of an ensemble run with and without the bias head, on one and two threads, hashed in
    two processes (the choice is made once per process)."""
    here = str(Path(__file__).resolve().parent)
    digests = []
    for kernel in ("portable", None):
        env = {k: v for k, v in os.environ.items() if k != "NCZIP_KERNEL"}
        if kernel:
            env["NCZIP_KERNEL"] = kernel
        run = subprocess.run([sys.executable, "-c", _TABLES_SCRIPT, here], env=env, capture_output=True, text=True, check=True)
        digests.append(run.stdout.strip())
    assert len(digests[0]) == 64 and digests[0] == digests[1]
