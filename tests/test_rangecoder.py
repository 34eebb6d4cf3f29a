"""The range coder in nczip._cext against its Python reference, constriction, and bad input."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

import reference_coder as ref
from nczip import _cext

MAX_ALPHABET = 2000


# ------------------------------------------------------------------------------ helpers


def make_table(n: int, precision: int, seed: int, shape: str) -> np.ndarray:
    """A frequency table of n entries, each >= 1, summing to exactly 2**precision."""
    total = 1 << precision
    assert n <= total
    rng = np.random.default_rng(seed)
    if shape == "uniform":
        w = np.ones(n)
    elif shape == "random":
        w = rng.random(n)
    elif shape == "skewed":  # heavy tail, like a language model
        w = rng.pareto(0.7, n) + 1e-9
    elif shape == "dominant":  # one symbol holds nearly everything
        w = np.full(n, 1e-12)
        w[rng.integers(n)] = 1.0
    else:
        raise ValueError(shape)
    budget = total - n
    freq = 1 + np.floor(w * (budget / w.sum())).astype(np.int64)
    freq = np.minimum(freq, 1 + budget)
    freq[int(np.argmax(w))] += total - int(freq.sum())
    assert freq.min() >= 1 and int(freq.sum()) == total
    return freq.astype(np.uint32)


def pick_symbols(freq: np.ndarray, mode: str, length: int, seed: int) -> list[int]:
    n = len(freq)
    rng = np.random.default_rng(seed + 1)
    if mode == "empty" or length == 0:
        return []
    if mode == "model":  # drawn from the table itself: the typical case
        p = freq / freq.sum()
        return rng.choice(n, size=length, p=p).tolist()
    if mode == "uniform":
        return rng.integers(0, n, size=length).tolist()
    if mode == "last":
        return [n - 1] * length
    if mode == "most":
        return [int(np.argmax(freq))] * length
    if mode == "least":
        return [int(np.argmin(freq))] * length
    if mode == "mixed":  # runs of the last symbol between random ones (drives carries)
        out = rng.integers(0, n, size=length)
        out[rng.random(length) < 0.7] = n - 1
        return out.tolist()
    raise ValueError(mode)


def c_encode(freq: np.ndarray, symbols: list[int], precision: int, via: str = "cum") -> bytes:
    cum = np.concatenate([[0], np.cumsum(freq, dtype=np.int64)])
    enc = _cext.Encoder()
    for i, s in enumerate(symbols):
        if via == "freqs" or (via == "alternate" and i % 2):
            enc.encode_freqs(freq, s, precision)
        else:
            enc.encode(int(cum[s]), int(freq[s]), precision)
    out = enc.finish()
    assert enc.bytes_written == len(out)
    return out


def ref_encode(freq: np.ndarray, symbols: list[int], precision: int) -> tuple[bytes, int]:
    cum = np.concatenate([[0], np.cumsum(freq, dtype=np.int64)])
    enc = ref.RefEncoder()
    for s in symbols:
        enc.encode(int(cum[s]), int(freq[s]), precision)
    return enc.finish(), enc.carries


def c_decode(data: bytes, freq: np.ndarray, count: int, precision: int, via: str) -> list[int]:
    cum = np.concatenate([[0], np.cumsum(freq, dtype=np.int64)])
    dec = _cext.Decoder(data)
    out = []
    for _ in range(count):
        if via == "freqs":
            out.append(dec.decode_freqs(freq, precision))
        else:
            t = dec.target(precision)
            s = int(np.searchsorted(cum, t, side="right")) - 1
            dec.advance(int(cum[s]), int(freq[s]), precision)
            out.append(s)
    # A complete stream is consumed exactly; the decoder reads at most 7 padding bytes.
    assert dec.position == len(data)
    assert dec.overrun <= 7
    return out


@st.composite
def coding_cases(draw):
    n = draw(st.one_of(st.integers(1, 8), st.integers(1, MAX_ALPHABET)))
    min_precision = max(1, math.ceil(math.log2(n)))
    precision = draw(st.integers(min_precision, 31))
    shape = draw(st.sampled_from(["uniform", "random", "skewed", "dominant"]))
    seed = draw(st.integers(0, 2**32 - 1))
    mode = draw(st.sampled_from(["empty", "model", "uniform", "last", "most", "least", "mixed"]))
    length = draw(st.integers(0, 300))
    freq = make_table(n, precision, seed, shape)
    return freq, precision, pick_symbols(freq, mode, length, seed)


# ------------------------------------------------------------------------ round trips


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=coding_cases(), via=st.sampled_from(["cum", "freqs", "alternate"]))
def test_roundtrip_matches_reference(case, via):
    freq, precision, symbols = case
    data = c_encode(freq, symbols, precision, via)
    expected, _ = ref_encode(freq, symbols, precision)
    assert data == expected
    assert c_decode(data, freq, len(symbols), precision, "freqs") == symbols
    assert c_decode(data, freq, len(symbols), precision, "target") == symbols


@settings(max_examples=examples(40), deadline=None)
@given(case=coding_cases())
def test_reference_decoder_roundtrip(case):
    freq, precision, symbols = case
    data, _ = ref_encode(freq, symbols, precision)
    dec = ref.RefDecoder(data)
    fl = freq.tolist()
    assert [dec.decode_freqs(fl, precision) for _ in symbols] == symbols
    assert dec.pos == len(data) and dec.overrun <= 7


@settings(max_examples=examples(60), deadline=None)
@given(
    tables=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 2**32 - 1)), min_size=0,
                    max_size=60),
    precision=st.integers(9, 31),
)
def test_roundtrip_with_a_new_table_per_symbol(tables, precision):
    """The normal use: every symbol has its own distribution."""
    freqs, symbols = [], []
    for n, seed in tables:
        f = make_table(n, precision, seed, "skewed")
        freqs.append(f)
        symbols.append(int(np.random.default_rng(seed).integers(n)))
    enc, renc = _cext.Encoder(), ref.RefEncoder()
    for f, s in zip(freqs, symbols):
        enc.encode_freqs(f, s, precision)
        renc.encode(int(f[:s].sum()), int(f[s]), precision)
    data = enc.finish()
    assert data == renc.finish()
    dec = _cext.Decoder(data)
    assert [dec.decode_freqs(f, precision) for f in freqs] == symbols


def test_empty_message():
    enc = _cext.Encoder()
    assert enc.bytes_written == 0
    assert enc.finish() == ref.RefEncoder().finish() == b"\x00"


def test_certain_symbol_costs_nothing():
    """A symbol with the whole range (freq == 2**P) does not narrow the interval."""
    enc = _cext.Encoder()
    for _ in range(1000):
        enc.encode(0, 2**20, 20)
    assert enc.finish() == b"\x00"


# ------------------------------------------------------------------------------ carries


def straddle_half(precision: int, steps: int, jump: bool) -> tuple[list[tuple[int, int]], int]:
    """Intervals that keep the point 1/2 in their middle, then (if jump) one just above it,
    else one whose low is just below it.

    While the interval straddles 1/2 = 0x7FFF...|0x8000..., the encoder can only write
    0x7F 0xFF 0xFF ...; the final interval above 1/2 makes low overflow, and the carry runs
    back through the whole run of 0xFF bytes. Returns the (cum, freq) steps and the reference
    encoder's carry count.
    """
    total = 1 << precision
    freq = total // 4  # a quarter around the point: it stays far from both edges
    enc = ref.RefEncoder()
    coded = []
    for i in range(steps + 1):
        full_low = (int.from_bytes(enc.out, "big") << 64) + enc.low
        point = 1 << (63 + 8 * len(enc.out))  # 1/2, in units of the current last bit
        r = enc.range >> precision
        t = (point - full_low) // r  # the point lies in [low + r t, low + r (t + 1))
        if i < steps:
            cum = min(max(0, t - freq // 2), total - freq)
            step = (cum, freq)
        elif jump:
            step = (t + 1, 1)
        else:  # the point just above low: finish must round low up across it
            step = (t, freq)
        enc.encode(*step, precision)
        coded.append(step)
    return coded, enc.carries


@pytest.mark.parametrize("precision", [4, 8, 17, 31])
def test_carry_through_a_long_run_of_ff(precision):
    coded, carries = straddle_half(precision, 400, jump=True)
    assert carries == 1
    renc = ref.RefEncoder()
    for cum, freq in coded[:-1]:
        renc.encode(cum, freq, precision)
    run = bytes(renc.out)
    assert run[0] == 0x7F and run[1:] == b"\xff" * (len(run) - 1) and len(run) >= 50
    renc.encode(*coded[-1], precision)
    assert renc.out[: len(run)] == b"\x80" + b"\x00" * (len(run) - 1)  # carried through all
    expected = renc.finish()

    enc = _cext.Encoder()
    for cum, freq in coded:
        enc.encode(cum, freq, precision)
    data = enc.finish()
    assert data == expected
    dec = _cext.Decoder(data)
    for cum, freq in coded:
        t = dec.target(precision)
        assert cum <= t < cum + freq
        dec.advance(cum, freq, precision)


@pytest.mark.parametrize("precision", [12, 17, 31])
def test_carry_in_finish(precision):
    """Finishing while the interval straddles 1/2 with low less than 2^56 below it (in the
    64-bit window; precision >= 12 guarantees that): finish rounds low up across it."""
    coded, carries = straddle_half(precision, 200, jump=False)
    assert carries == 0
    renc, enc = ref.RefEncoder(), _cext.Encoder()
    for cum, freq in coded:
        renc.encode(cum, freq, precision)
        enc.encode(cum, freq, precision)
    expected = renc.finish()
    assert renc.carries == 1
    assert expected[0] == 0x80 and expected[1:] == b"\x00" * (len(expected) - 1)
    assert enc.finish() == expected
    dec = _cext.Decoder(expected)
    for cum, freq in coded:
        dec.advance(cum, freq, precision)
    assert dec.position == len(expected)


def test_random_streams_produce_carries():
    """Mixed runs of the highest symbol push low up: carries happen in ordinary streams too."""
    total_carries = 0
    for seed in range(20):
        freq = make_table(5, 12, seed, "random")
        symbols = pick_symbols(freq, "mixed", 400, seed)
        expected, carries = ref_encode(freq, symbols, 12)
        total_carries += carries
        assert c_encode(freq, symbols, 12) == expected
        assert c_decode(expected, freq, len(symbols), 12, "freqs") == symbols
    assert total_carries > 50


# ---------------------------------------------------------------------- bad input


def decode_garbage(data: bytes, freq: np.ndarray, precision: int, count: int) -> None:
    dec = _cext.Decoder(data)
    for _ in range(count):
        try:
            s = dec.decode_freqs(freq, precision)
        except _cext.CoderError:
            with pytest.raises(ValueError, match="unusable"):
                dec.decode_freqs(freq, precision)
            return
        assert 0 <= s < len(freq)
    assert dec.position <= len(data)


@settings(max_examples=examples(150), deadline=None)
@given(
    data=st.binary(max_size=64),
    n=st.integers(1, 300),
    precision=st.integers(9, 31),
    seed=st.integers(0, 2**32 - 1),
)
def test_garbage_never_crashes(data, n, precision, seed):
    decode_garbage(data, make_table(n, precision, seed, "skewed"), precision, 200)


@settings(max_examples=examples(60), deadline=None)
@given(case=coding_cases(), cut=st.integers(0, 64), flip=st.integers(0, 2**16))
def test_truncated_or_damaged_stream_never_crashes(case, cut, flip):
    freq, precision, symbols = case
    assume(symbols)
    data = bytearray(c_encode(freq, symbols, precision))
    if flip % 2 and data:
        data[flip % len(data)] ^= 1 << (flip % 8)
    decode_garbage(bytes(data[: max(0, len(data) - cut)]), freq, precision, len(symbols) + 20)


@settings(max_examples=examples(150), deadline=None)
@given(
    data=st.binary(max_size=40),
    steps=st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 2**31), st.integers(1, 31)),
                   max_size=40),
)
def test_arbitrary_advance_calls_never_crash(data, steps):
    """target/advance with made-up intervals: each call succeeds, or raises ValueError
    (CoderError for an interval the code is not in) and leaves the decoder unusable."""
    dec = _cext.Decoder(data)
    for cum, freq, precision in steps:
        cum, freq = cum % (1 << precision), freq % (1 << precision) + 1
        try:
            t = dec.target(precision)
            assert 0 <= t < 1 << precision
            dec.advance(cum, freq, precision)
        except ValueError:
            with pytest.raises(ValueError, match="unusable"):
                dec.target(precision)
            return


def test_all_ff_stream_is_corrupt():
    """value >= range at the start: only a corrupt stream can begin with eight 0xFF bytes."""
    dec = _cext.Decoder(b"\xff" * 12)
    with pytest.raises(_cext.CoderError):
        dec.target(16)


def test_advance_outside_the_decoded_interval_is_corrupt():
    enc = _cext.Encoder()
    enc.encode(0, 10, 8)
    dec = _cext.Decoder(enc.finish())
    assert dec.target(8) < 10
    with pytest.raises(_cext.CoderError, match="corrupt"):
        dec.advance(100, 10, 8)
    with pytest.raises(ValueError, match="unusable"):
        dec.target(8)


def test_garbage_with_logits_never_crashes():
    rng = np.random.default_rng(5)
    for trial in range(30):
        data = rng.integers(0, 256, size=int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        if trial == 0:
            data = b"\xff" * 16
        dec = _cext.Decoder(data)
        for _ in range(50):
            logits = rng.normal(0, 4, 500).astype(np.float32)
            try:
                s = dec.decode_logits(logits, 24)
            except _cext.CoderError:
                break
            assert 0 <= s < 500


def test_decoding_past_the_end_reads_zeros_and_counts_them():
    dec = _cext.Decoder(b"")
    freq = np.array([1 << 15, 1 << 15], dtype=np.uint32)
    assert [dec.decode_freqs(freq, 16) for _ in range(100)] == [0] * 100
    assert dec.position == 0 and dec.overrun >= 12


# ------------------------------------------------------------------- constriction


@settings(max_examples=examples(25), deadline=None)
@given(
    n=st.integers(2, MAX_ALPHABET),
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(["uniform", "random", "skewed", "dominant"]),
    mode=st.sampled_from(["model", "uniform", "least", "mixed"]),
    length=st.integers(200, 3000),
)
def test_size_matches_constriction_and_ideal(n, seed, shape, mode, length):
    """Same tables, same symbols: our size within 0.1% + 8 bytes of constriction's, both of
    the ideal -sum log2(freq / total).

    constriction's Python models have precision 24. Categorical(perfect=False) with
    probabilities freq - 1 reproduces the table exactly: its fast quantizer gives symbol i the
    left edge floor(sum_{j<i} p_j * (2**24 - n) / sum(p)) + i, and with these integer
    probabilities the scale is exactly 1.0, so the edges are the exact cumulative sums.
    """
    constriction = pytest.importorskip("constriction")
    precision = 24
    freq = make_table(n, precision, seed, shape)
    symbols = np.array(pick_symbols(freq, mode, length, seed), dtype=np.int32)
    assume(int((freq - 1).sum()) > 0)  # constriction needs a positive normalization

    model = constriction.stream.model.Categorical((freq - 1).astype(np.float64), perfect=False)
    cenc = constriction.stream.queue.RangeEncoder()
    cenc.encode(symbols, model)
    theirs = cenc.get_compressed().nbytes
    ours = len(c_encode(freq, symbols.tolist(), precision))
    ideal = float(-np.log2(freq[symbols].astype(np.float64) / 2**precision).sum() / 8)

    def close(a, b):
        return abs(a - b) <= 0.001 * b + 8

    assert close(ours, theirs), (ours, theirs, ideal)
    assert close(ours, ideal), (ours, ideal)
    assert close(theirs, ideal), (theirs, ideal)
    # Decodes with constriction too: the model was built as intended.
    cdec = constriction.stream.queue.RangeDecoder(cenc.get_compressed())
    assert np.array_equal(cdec.decode(model, len(symbols)), symbols)


# -------------------------------------------------------------------------- golden


GOLDEN_FREQ = np.array([1, 3, 60, 7, 186, 3743, 2, 1, 8, 85], dtype=np.uint32)  # sums to 2**12
GOLDEN_SYMBOLS = [5, 5, 4, 9, 5, 0, 2, 5, 6, 5, 5, 3, 5, 7, 5, 8, 1, 5, 5, 9, 4, 5, 5, 5]
GOLDEN_BYTES = "2bf71189adb5a3f044a5e025"


def test_golden_bytes():
    """Pins the format: any change to the coder's output breaks existing archives."""
    assert int(GOLDEN_FREQ.sum()) == 1 << 12
    data = c_encode(GOLDEN_FREQ, GOLDEN_SYMBOLS, 12)
    assert data.hex() == GOLDEN_BYTES
    assert ref_encode(GOLDEN_FREQ, GOLDEN_SYMBOLS, 12)[0].hex() == GOLDEN_BYTES
    assert c_decode(data, GOLDEN_FREQ, len(GOLDEN_SYMBOLS), 12, "freqs") == GOLDEN_SYMBOLS


# ----------------------------------------------------------------------- the API


def test_argument_errors_name_the_valid_range():
    enc = _cext.Encoder()
    with pytest.raises(ValueError, match=r"precision must be in 1\.\.31, got 40"):
        enc.encode(0, 1, 40)
    cases = [
        ((0, 1, 0), r"precision must be in 1\.\.31, got 0"),
        ((0, 1, -3), r"precision must be in 1\.\.31, got -3"),
        ((256, 1, 8), r"cum must be in 0\.\.255 .*got 256"),
        ((-1, 1, 8), r"cum must be in 0\.\.255 .*got -1"),
        ((10, 0, 8), r"freq must be in 1\.\.246 .*got 0"),
        ((10, 247, 8), r"freq must be in 1\.\.246 .*got 247"),
        ((0, 2**70, 8), r"out of range"),
    ]
    for args, message in cases:
        enc = _cext.Encoder()
        with pytest.raises(ValueError, match=message):
            enc.encode(*args)
    freq = np.array([3, 5], dtype=np.uint32)
    with pytest.raises(ValueError, match=r"symbol must be in 0\.\.1, got 2"):
        _cext.Encoder().encode_freqs(freq, 2, 3)
    with pytest.raises(ValueError, match=r"sum to exactly 2\*\*4 = 16"):
        _cext.Encoder().encode_freqs(freq, 0, 4)
    with pytest.raises(ValueError, match="frequency 0"):
        _cext.Encoder().encode_freqs(np.array([0, 8], dtype=np.uint32), 0, 3)
    with pytest.raises(ValueError, match=r"precision must be in 1\.\.31, got 32"):
        _cext.Decoder(b"abc").target(32)
    with pytest.raises(TypeError):
        _cext.Encoder().encode(0.5, 1, 8)


def test_buffer_checks():
    enc = _cext.Encoder()
    with pytest.raises(TypeError, match="uint32"):
        enc.encode_freqs(np.array([8, 8], dtype=np.int64), 0, 4)
    with pytest.raises(TypeError, match="uint32"):
        _cext.Decoder(b"").decode_freqs(np.array([8, 8], dtype=np.float32), 4)
    with pytest.raises(ValueError, match="contiguous"):
        _cext.Encoder().encode_freqs(np.array([8, 0, 8, 0], dtype=np.uint32)[::2], 0, 4)
    with pytest.raises(TypeError):
        _cext.Encoder().encode_freqs([8, 8], 0, 4)
    # Any contiguous shape is read flat; array.array('I') works too.
    import array

    enc = _cext.Encoder()
    enc.encode_freqs(np.array([[8], [8]], dtype=np.uint32), 1, 4)
    enc.encode_freqs(array.array("I", [8, 8]), 1, 4)
    enc.finish()


def test_lifecycle():
    enc = _cext.Encoder()
    enc.encode(1, 2, 4)
    enc.finish()
    with pytest.raises(ValueError, match="finished"):
        enc.finish()
    with pytest.raises(ValueError, match="finished"):
        enc.encode(1, 2, 4)
    enc = _cext.Encoder()
    with pytest.raises(ValueError):
        enc.encode(1, 0, 4)
    with pytest.raises(ValueError, match="unusable"):
        enc.encode(1, 2, 4)
    with pytest.raises(ValueError, match="unusable"):
        enc.finish()
    with pytest.raises(TypeError):
        _cext.Encoder(1)
    assert issubclass(_cext.CoderError, ValueError)


def test_decoder_accepts_any_bytes_like_and_keeps_its_own_copy():
    freq = make_table(20, 10, 1, "random")
    symbols = pick_symbols(freq, "model", 100, 1)
    data = c_encode(freq, symbols, 10)
    for wrapped in (bytearray(data), memoryview(data), np.frombuffer(data, dtype=np.uint8)):
        dec = _cext.Decoder(wrapped)
        if isinstance(wrapped, bytearray):
            wrapped[:] = b"\x00" * len(wrapped)  # must not affect the decoder
        assert [dec.decode_freqs(freq, 10) for _ in symbols] == symbols
    with pytest.raises(TypeError):
        _cext.Decoder("text")


def test_threads_share_nothing_and_release_the_gil():
    freq = make_table(5000, 24, 3, "skewed")
    symbols = pick_symbols(freq, "model", 200, 3)
    expected = c_encode(freq, symbols, 24, "freqs")
    results = []

    def work():
        results.append(c_encode(freq, symbols, 24, "freqs"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4
    # One encoder used from several threads at once: serialized by its lock, no crash.
    enc = _cext.Encoder()

    def hammer():
        for s in symbols[:50]:
            enc.encode_freqs(freq, s, 24)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(enc.finish()) > 0


@pytest.mark.parametrize("n", [1, 63, 64, 65, 128, 200, 4099])
def test_every_symbol_decodes_around_the_search_blocks(n):
    """The decoder's symbol search sums whole blocks of 64 first, then scans one block: every
    symbol, including each block's first and last and the tail's, comes back."""
    precision = 24
    freq = make_table(n, precision, seed=n, shape="random")
    symbols = list(range(n)) + list(range(n - 1, -1, -1))
    enc = _cext.Encoder()
    for s in symbols:
        enc.encode_freqs(freq, s, precision)
    dec = _cext.Decoder(enc.finish())
    assert [dec.decode_freqs(freq, precision) for _ in symbols] == symbols
