"""The logits -> frequency quantizer in nczip._cext: invariants, bit-exactness, overhead."""
from __future__ import annotations

import hashlib
import math
import re
from decimal import Decimal, getcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis_budget import examples

import reference_coder as ref
from nczip import _cext


def quantize(logits: np.ndarray, precision: int) -> np.ndarray:
    out = np.empty(len(logits), dtype=np.uint32)
    _cext.quantize(logits, out, precision)
    return out


def check_invariants(logits: np.ndarray, freq: np.ndarray, precision: int) -> None:
    assert freq.dtype == np.uint32 and freq.shape == logits.shape
    assert int(freq.min()) >= 1
    assert int(freq.sum(dtype=np.uint64)) == 1 << precision
    # Ordering: a larger logit never gets a smaller frequency (NaN counts as -inf).
    key = np.where(np.isnan(logits), -np.inf, logits).astype(np.float64)
    order = np.argsort(key, kind="stable")
    k, f = key[order], freq[order].astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    group_min = np.minimum.reduceat(f, starts)
    group_max = np.maximum.reduceat(f, starts)
    assert np.all(group_max[:-1] <= group_min[1:])


def seeded_logits(seed: int, n: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.normal(0, 3, n)
    elif kind == "peaked":  # a confident model: a few logits far above a normal(0, 3) crowd
        x = rng.normal(0, 3, n)
        x[rng.integers(0, n, 3)] += rng.uniform(10, 30, 3)
    elif kind == "wide":
        x = rng.normal(0, 1, n) * 10.0 ** rng.uniform(-3, 4, n)
    elif kind == "ties":
        x = rng.integers(-3, 3, n).astype(np.float64)
    elif kind == "specials":
        x = rng.normal(0, 5, n)
        pick = rng.random(n)
        x[pick < 0.1] = -np.inf
        x[(pick >= 0.1) & (pick < 0.15)] = np.nan
        if n > 3 and rng.random() < 0.3:
            x[rng.integers(0, n, 2)] = np.inf
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


# ------------------------------------------------------------------ invariants


float32s = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=examples(300), deadline=None)
@given(
    logits=hnp.arrays(np.float32, st.integers(1, 300), elements=float32s),
    extra=st.integers(0, 30),
)
def test_invariants_on_arbitrary_float32(logits, extra):
    n = len(logits)
    precision = min(31, max(1, math.ceil(math.log2(n))) + 1 + extra)
    freq = quantize(logits, precision)
    check_invariants(logits, freq, precision)
    assert freq.tolist() == ref.quantize(logits, precision)


@settings(max_examples=examples(300), deadline=None)
@given(
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["normal", "peaked", "wide", "ties", "specials"]),
    precision_slack=st.integers(0, 30),
)
def test_matches_reference_bit_for_bit(n, seed, kind, precision_slack):
    logits = seeded_logits(seed, n, kind)
    precision = min(31, math.ceil(math.log2(n)) + 1 + precision_slack)
    freq = quantize(logits, precision)
    check_invariants(logits, freq, precision)
    assert freq.tolist() == ref.quantize(logits, precision)


@pytest.mark.parametrize(
    "name, logits",
    [
        ("single", np.array([0.5], np.float32)),
        ("all equal", np.full(1000, 7.0, np.float32)),
        ("all -inf", np.full(1000, -np.inf, np.float32)),
        ("all nan", np.full(100, np.nan, np.float32)),
        ("nan and -inf", np.array([np.nan, -np.inf, np.nan, -np.inf], np.float32)),
        ("one +inf", np.array([1.0, np.inf, -np.inf, np.nan, 3e38], np.float32)),
        ("several +inf", np.array([np.inf, 0.0, np.inf, np.inf, -3e38], np.float32)),
        ("huge range", np.array([-3.4e38, 3.4e38, 0.0, 1e-45, -1e-45], np.float32)),
        ("at the cutoff", np.array([0.0, -64.0, -64.00001, -63.99999], np.float32)),
        ("denormals", np.array([1e-45, 0.0, -1e-45, 2e-45], np.float32)),
    ],
)
@pytest.mark.parametrize("precision", [None, 31])
def test_special_values(name, logits, precision):
    precision = precision or max(1, math.ceil(math.log2(len(logits))) + 1)
    freq = quantize(logits, precision)
    check_invariants(logits, freq, precision)
    assert freq.tolist() == ref.quantize(logits, precision)


def test_special_value_semantics():
    f = quantize(np.array([np.inf, 0.0, np.inf, np.nan], np.float32), 10)
    assert f.tolist() == [511, 1, 511, 1]  # the +inf share; the first maximum gets the rest
    f = quantize(np.full(4, -np.inf, np.float32), 10)
    assert f.tolist() == [256, 256, 256, 256]  # uniform
    f = quantize(np.array([0.0, -64.5, -np.inf, np.nan], np.float32), 10)
    assert f.tolist() == [1021, 1, 1, 1]  # below the cutoff = -inf


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 65536, 262144, 300000])
def test_large_alphabets_at_precision_31(n):
    logits = seeded_logits(n, n, "specials" if n % 2 else "peaked")
    freq = quantize(logits, 31)
    check_invariants(logits, freq, 31)


def test_matches_reference_full_vocabulary():
    logits = seeded_logits(99, 262144, "peaked")
    assert quantize(logits, 31).tolist() == ref.quantize(logits, 31)


def test_alphabet_size_limits():
    logits = np.zeros(5, np.float32)
    quantize(logits[:4], 3)  # 4 <= 2**3 / 2
    with pytest.raises(ValueError, match=r"alphabet size must be in 1\.\.4 .*got 5"):
        quantize(logits, 3)
    with pytest.raises(ValueError, match=r"alphabet size must be in 1\.\.1073741824 .*got 0"):
        quantize(logits[:0], 31)
    with pytest.raises(ValueError, match=r"precision must be in 1\.\.31, got 32"):
        quantize(logits, 32)
    with pytest.raises(ValueError, match="same length"):
        _cext.quantize(logits, np.empty(4, np.uint32), 10)
    with pytest.raises(TypeError, match="float32"):
        _cext.quantize(logits.astype(np.float64), np.empty(5, np.uint32), 10)
    with pytest.raises(TypeError, match="uint32"):
        _cext.quantize(logits, np.empty(5, np.int32), 10)
    with pytest.raises((TypeError, BufferError, ValueError)):
        _cext.quantize(logits, bytes(20), 10)  # read-only output


def test_output_may_alias_the_input():
    logits = seeded_logits(1, 5000, "peaked")
    expected = quantize(logits, 24)
    buf = logits.copy()
    _cext.quantize(buf, buf.view(np.uint32), 24)
    assert np.array_equal(buf.view(np.uint32), expected)


# --------------------------------------------------------------- the exp approximation


def test_constants_are_the_correctly_rounded_values():
    getcontext().prec = 60
    exact = Decimal(256) / Decimal(2).ln()
    step = Fraction(ref.STEP_SCALE)
    below = Fraction(float(np.nextafter(np.float32(ref.STEP_SCALE), np.float32(0))))
    above = Fraction(float(np.nextafter(np.float32(ref.STEP_SCALE), np.float32(1e9))))
    exact_fraction = Fraction(exact)
    assert abs(step - exact_fraction) <= min(abs(below - exact_fraction), abs(above - exact_fraction))
    # cdf.c's table is the reference's, entry for entry.
    source = (Path(__file__).resolve().parent.parent / "cext" / "cdf.c").read_text()
    body = re.search(r"ncz_pow2_frac\[LOG_STEPS_PER_BIT\] = \{(.*?)\};", source, re.S).group(1)
    assert tuple(int(v) for v in re.findall(r"(\d+)u", body)) == ref.POW2_FRAC
    assert ref.POW2_FRAC[0] == 1 << 31 and len(ref.POW2_FRAC) == 256


def test_weights_are_monotone_and_within_one_step_of_exact():
    """weight_of(v) ~ 2^31 e^(v - m): truncating the distance to whole 1/256-bit steps only ever
    rounds the weight up, by less than a factor 2^(1/256) (plus the float32 rounding of the
    distance and of the table)."""
    m = np.float32(7.25)
    distances = np.unique(np.concatenate([np.linspace(0, 23, 40001), np.logspace(-7, 1.3, 2000)]))
    values = (m - distances.astype(np.float32)).astype(np.float32)
    values = np.unique(values)[::-1]  # descending logits: weights must not increase
    weights = [ref.weight_of(float(v), float(m)) for v in values]
    assert weights[0] == 1 << 31
    assert all(a >= b for a, b in zip(weights, weights[1:]))
    for v, w in zip(values.tolist()[::97], weights[::97]):
        exact = 2.0**31 * math.exp(v - float(m))
        if exact >= 2**20:  # where truncation to an integer does not dominate
            assert exact * (1 - 1e-6) <= w <= exact * 2 ** (1 / 256) * (1 + 1e-6)
    assert ref.weight_of(float(m) - 21.4, float(m)) > 0
    assert ref.weight_of(float(m) - 21.6, float(m)) == 0
    assert ref.weight_of(math.nan, float(m)) == 0 and ref.weight_of(-math.inf, float(m)) == 0


def test_ideal_bits():
    # A diagnostic with its own float32 exp2 (fast enough for every token of a -vv run): within
    # 1e-5 bits of the double-precision reference.
    logits = seeded_logits(3, 20000, "peaked")
    for s in [0, 17, int(np.argmax(logits)), 19999]:
        assert _cext.ideal_bits(logits, s) == pytest.approx(ref.ideal_bits(logits, s), abs=1e-5)
    x = logits.astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    assert _cext.ideal_bits(logits, 5) == pytest.approx(-math.log2(p[5]), abs=1e-5)
    assert _cext.ideal_bits(np.array([np.inf, 1, np.inf], np.float32), 0) == 1.0
    assert _cext.ideal_bits(np.array([np.inf, 1, np.inf], np.float32), 1) == math.inf
    assert _cext.ideal_bits(np.full(8, -np.inf, np.float32), 3) == 3.0
    assert _cext.ideal_bits(np.array([0, np.nan], np.float32), 1) == math.inf
    with pytest.raises(ValueError, match=r"symbol must be in 0\.\.2, got 3"):
        _cext.ideal_bits(np.zeros(3, np.float32), 3)
    with pytest.raises(ValueError, match="empty"):
        _cext.ideal_bits(np.zeros(0, np.float32), 0)


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1023, 1024, 1025, 2048 + 37, 262144])
def test_ideal_bits_around_its_blocks(n):
    # The maximum and the sum run in 16 lanes over blocks of 1024, then a scalar tail: the
    # maximum in the tail or in the last lane, and NaN / -inf among the lanes, must not matter.
    rng = np.random.default_rng(n)
    logits = (rng.standard_normal(n) * 4).astype(np.float32)
    places = {0, n - 1, (n // 1024) * 1024 - 1, n - n % 1024, 15} & set(range(n))
    for top in sorted(places):
        x = logits.copy()
        x[top] = 40.0
        if n > 4:
            x[(top + 1) % n] = np.nan
            x[(top + 3) % n] = -np.inf
        for s in {0, top, n // 2}:
            assert _cext.ideal_bits(x, s) == pytest.approx(ref.ideal_bits(x, s), abs=1e-5)


# -------------------------------------------------------------------- overhead


@pytest.mark.parametrize("boost", [0.0, 10.0, 20.0])
def test_quantization_overhead_is_tiny(boost):
    """Coding with the 2**31 table costs < 0.05% more than the float softmax would.

    The cost is mostly the minimum frequency of 1 for all n symbols: about
    n / 2**31 * log2(e) = 1.8e-4 bits per token at n = 262144, whatever the distribution. So
    the relative bound holds while the model's entropy is above ~0.4 bits per token; the
    absolute bound holds always.
    """
    n, precision = 262144, 31
    rng = np.random.default_rng(int(boost))
    logits = rng.normal(0, 3, n).astype(np.float32)
    logits[rng.integers(0, n, 5)] += np.float32(boost)
    freq = quantize(logits, precision)
    x = logits.astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    nz = p > 0
    entropy = float(-(p[nz] * np.log2(p[nz])).sum())
    cross = float(-(p * np.log2(freq / 2.0**precision)).sum())
    excess = cross - entropy
    assert 0 <= excess < 0.0005 * entropy, (entropy, excess)
    assert excess < 2 * n / 2**precision * math.log2(math.e)


def test_overhead_absolute_bound_when_very_confident():
    n, precision = 262144, 31
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, n).astype(np.float32)
    logits[123] = 60.0  # p(top) ~ 1 - 1e-12
    freq = quantize(logits, precision)
    assert -math.log2(freq[123] / 2**precision) < 2 * n / 2**precision * math.log2(math.e)


# ------------------------------------------------------------ coding with logits


def test_encode_decode_logits_roundtrip_matches_reference():
    rng = np.random.default_rng(11)
    steps = []
    for i in range(60):
        n = int(rng.integers(1, 3000))
        kind = ["normal", "peaked", "wide", "ties", "specials"][i % 5]
        logits = seeded_logits(1000 + i, n, kind)
        freq = np.array(ref.quantize(logits, 24), dtype=np.int64)
        symbol = int(rng.choice(n, p=freq / freq.sum())) if i % 3 else int(rng.integers(n))
        steps.append((logits, symbol, freq))
    enc, renc = _cext.Encoder(), ref.RefEncoder()
    for logits, symbol, freq in steps:
        enc.encode_logits(logits, symbol, 24)
        renc.encode(int(freq[:symbol].sum()), int(freq[symbol]), 24)
    data = enc.finish()
    assert data == renc.finish()
    dec = _cext.Decoder(data)
    assert [dec.decode_logits(lg, 24) for lg, _, _ in steps] == [s for _, s, _ in steps]
    assert dec.position == len(data)


def test_encode_decode_logits_full_vocabulary():
    n = 262144
    rng = np.random.default_rng(12)
    steps = []
    for _ in range(8):
        logits = rng.normal(0, 3, n).astype(np.float32)
        top = rng.integers(0, n, 4)
        logits[top] += np.float32(15.0)
        steps.append((logits, int(top[0]) if rng.random() < 0.7 else int(rng.integers(n))))
    enc = _cext.Encoder()
    for logits, s in steps:
        enc.encode_logits(logits, s, 31)
    data = enc.finish()
    dec = _cext.Decoder(data)
    assert [dec.decode_logits(lg, 31) for lg, _ in steps] == [s for _, s in steps]
    # Same bytes as quantize + encode_freqs.
    enc2 = _cext.Encoder()
    for logits, s in steps:
        enc2.encode_freqs(quantize(logits, 31), s, 31)
    assert enc2.finish() == data


def test_logits_argument_errors():
    logits = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match=r"symbol must be in 0\.\.9, got 10"):
        _cext.Encoder().encode_logits(logits, 10, 24)
    with pytest.raises(ValueError, match=r"symbol must be in 0\.\.9, got -1"):
        _cext.Encoder().encode_logits(logits, -1, 24)
    with pytest.raises(ValueError, match=r"alphabet size must be in 1\.\.4 .*got 10"):
        _cext.Encoder().encode_logits(logits, 0, 3)
    with pytest.raises(ValueError, match=r"alphabet size must be in 1\.\.4 .*got 10"):
        _cext.Decoder(b"\x00").decode_logits(logits, 3)
    with pytest.raises(TypeError, match="float32"):
        _cext.Encoder().encode_logits(logits.astype(np.float16), 0, 24)


# ---------------------------------------------------------------------- golden


def portable_logits(n: int, seed: int) -> np.ndarray:
    """Logits from integer arithmetic only (splitmix64, Irwin-Hall), so the golden input is
    the same on every platform and numpy version."""
    state = seed
    mask = (1 << 64) - 1
    out = []
    for _ in range(n):
        acc = 0
        for _ in range(4):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            acc += (z ^ (z >> 31)) >> 42  # 22-bit uniform
        out.append((acc - (1 << 23)) / (1 << 20))  # in [-8, 8), 24 bits: exact in float32
    x = np.array(out, dtype=np.float32)
    x[::997] += np.float32(12.0)
    return x


GOLDEN_TABLE_SHA256 = "9f817dd934e1d73de055cbb1635eee9f7b10517f36f80b00efdf77ee3897d75f"
GOLDEN_STREAM_HEX = "0004ec5d0b7fc60a378827e028d74b5c7d16a8210c"


def test_golden_frequency_table():
    """Pins the quantizer: a changed table means archives written before do not decode."""
    logits = portable_logits(20000, 2024)
    assert hashlib.sha256(logits.tobytes()).hexdigest()[:16] == "9953d4ad8b50a26f"
    freq = quantize(logits, 31)
    assert freq.tolist() == ref.quantize(logits, 31)
    digest = hashlib.sha256(freq.astype("<u4").tobytes()).hexdigest()
    assert digest == GOLDEN_TABLE_SHA256


def test_golden_logits_stream():
    logits = portable_logits(5000, 7)
    enc = _cext.Encoder()
    symbols = [0, 997, 4999, 1994, 3, 2991, 2991, 42]
    for i, s in enumerate(symbols):
        enc.encode_logits(np.roll(logits, i), s, 31)
    data = enc.finish()
    assert data.hex() == GOLDEN_STREAM_HEX
    dec = _cext.Decoder(data)
    assert [dec.decode_logits(np.roll(logits, i), 31) for i in range(len(symbols))] == symbols



def test_import_selftest_constant_matches_the_reference():
    """cdf.c refuses to load when its build computes other weights than the reference; its
    expected hash must be the reference's."""
    source = (Path(__file__).resolve().parent.parent / "cext" / "cdf.c").read_text()
    found = re.search(r"#define SELFTEST_HASH UINT64_C\((0x[0-9a-f]+)\)", source)
    assert found and int(found.group(1), 16) == ref.selftest_hash()
