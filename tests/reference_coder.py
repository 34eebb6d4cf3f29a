"""Pure-Python reference of nczip's range coder and logits quantizer: the oracle for the C code.

It repeats cext/rangecoder.c and cext/cdf.c operation by operation: Python ints masked to 64
bits stand in for uint64_t, and Python floats are IEEE doubles with round-to-nearest and no FMA,
so the quantizer's arithmetic gives bit-identical results. Slow (pure Python) and meant to be:
what matters is that it is obviously the specification.
"""
from __future__ import annotations

import math
import struct
from typing import Iterable, Sequence

MASK64 = (1 << 64) - 1
TOP = 1 << 56
MIN_PRECISION = 1
MAX_PRECISION = 31


def _f32(x: float) -> float:
    """Round a double to the nearest float32, overflowing to inf like float32 arithmetic.

    The double result of one operation on float32 operands, rounded to float32, equals the
    float32 operation's result (53 >= 2 * 24 + 2), so this repeats C's float arithmetic."""
    import numpy as np

    with np.errstate(over="ignore"):
        return float(np.float32(x))


# Same constants as cdf.c: 256 / ln 2 rounded to float32 (given by its bits), and the table
# POW2_FRAC[j] = 2^(31 - j/256) rounded to nearest, computed here with 60 exact digits.
STEP_SCALE = struct.unpack("<f", struct.pack("<I", 0x43B8AA3B))[0]
LOG_STEPS_PER_BIT = 256
LOG_STEP_LIMIT = 32 * LOG_STEPS_PER_BIT


def _pow2_frac_table() -> tuple[int, ...]:
    from decimal import ROUND_HALF_EVEN, Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        return tuple(
            int((Decimal(2) ** (31 - Decimal(j) / 256)).to_integral_value(rounding=ROUND_HALF_EVEN))
            for j in range(LOG_STEPS_PER_BIT)
        )


POW2_FRAC = _pow2_frac_table()


def _check_interval(cum: int, freq: int, precision: int) -> None:
    if not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..31, got {precision}")
    total = 1 << precision
    if not 0 <= cum < total:
        raise ValueError(f"cum must be in 0..{total - 1}, got {cum}")
    if not 1 <= freq <= total - cum:
        raise ValueError(f"freq must be in 1..{total - cum}, got {freq}")


class CorruptStream(ValueError):
    """The reference decoder's counterpart of nczip._cext.CoderError."""


class RefEncoder:
    def __init__(self) -> None:
        self.low = 0
        self.range = MASK64
        self.out = bytearray()
        self.carries = 0  # how often a carry reached the written bytes (tests want some)

    def _carry(self) -> None:
        self.carries += 1
        i = len(self.out) - 1
        while self.out[i] == 0xFF:  # never runs off the front; IndexError would flag a bug
            self.out[i] = 0
            i -= 1
        if i < 0:
            raise AssertionError("carry past the first byte")
        self.out[i] += 1

    def encode(self, cum: int, freq: int, precision: int) -> None:
        _check_interval(cum, freq, precision)
        r = self.range >> precision
        step = r * cum
        low = self.low + step
        if low > MASK64:
            self._carry()
        self.low = low & MASK64
        if cum + freq == 1 << precision:
            self.range -= step
        else:
            self.range = r * freq
        while self.range < TOP:
            self.out.append(self.low >> 56)
            self.low = (self.low << 8) & MASK64
            self.range <<= 8

    def encode_freqs(self, freqs: Sequence[int], symbol: int, precision: int) -> None:
        if sum(freqs) != 1 << precision:
            raise ValueError("table must sum to 2**precision")
        self.encode(sum(freqs[:symbol]), freqs[symbol], precision)

    def finish(self) -> bytes:
        for k in range(1, 9):
            mask = (1 << (64 - 8 * k)) - 1
            total = self.low + mask
            v = total & ~mask & MASK64
            if (v - self.low) & MASK64 < self.range:
                if total > MASK64:
                    self._carry()
                self.out += v.to_bytes(8, "big")[:k]
                return bytes(self.out)
        raise AssertionError("unreachable: k = 8 always fits")


class RefDecoder:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.overrun = 0
        self.range = MASK64
        self.value = 0
        for _ in range(8):
            self.value = (self.value << 8) | self._next()

    def _next(self) -> int:
        if self.pos < len(self.data):
            self.pos += 1
            return self.data[self.pos - 1]
        self.overrun += 1
        return 0

    def target(self, precision: int) -> int:
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"precision must be in 1..31, got {precision}")
        if self.value >= self.range:
            raise CorruptStream("value >= range")
        return min(self.value // (self.range >> precision), (1 << precision) - 1)

    def advance(self, cum: int, freq: int, precision: int) -> None:
        _check_interval(cum, freq, precision)
        if self.value >= self.range:
            raise CorruptStream("value >= range")
        r = self.range >> precision
        step = r * cum
        rng = self.range - step if cum + freq == 1 << precision else r * freq
        if self.value < step or self.value - step >= rng:
            raise CorruptStream("code outside the symbol's interval")
        self.value -= step
        self.range = rng
        while self.range < TOP:
            self.value = ((self.value << 8) | self._next()) & MASK64
            self.range <<= 8

    def decode_freqs(self, freqs: Sequence[int], precision: int) -> int:
        t = self.target(precision)
        cum = 0
        for s, f in enumerate(freqs):
            if t < cum + f:
                self.advance(cum, f, precision)
                return s
            cum += f
        raise ValueError("table sums to less than 2**precision")


def encode_symbols(freq_tables: Iterable[Sequence[int]], symbols: Iterable[int],
                   precision: int) -> bytes:
    enc = RefEncoder()
    for freqs, s in zip(freq_tables, symbols):
        enc.encode(sum(freqs[:s]), freqs[s], precision)
    return enc.finish()


# ---------------------------------------------------------------------------- quantizer


def weight_of(v: float, mf: float) -> int:
    """cdf.c's weight_of: 2^(31 - k/256) for k 1/256-bit steps below the maximum, in fixed point."""
    steps = _f32(_f32(mf - v) * STEP_SCALE)  # two float32 operations, each rounded
    k = int(steps) if steps < LOG_STEP_LIMIT else LOG_STEP_LIMIT  # NaN and -inf: the limit
    return POW2_FRAC[k % LOG_STEPS_PER_BIT] >> (k // LOG_STEPS_PER_BIT)


def _as_float32_list(logits) -> list[float]:
    """Float32 values as Python floats (exact), from a numpy array or any sequence."""
    try:
        import numpy as np

        return np.asarray(logits, dtype=np.float32).astype(np.float64).tolist()
    except ImportError:  # pragma: no cover - numpy is a test dependency
        return [struct.unpack("<f", struct.pack("<f", v))[0] for v in logits]


def quantize(logits, precision: int) -> list[int]:
    """The C quantizer ncz_quantize, in Python: frequencies >= 1 summing to 2**precision."""
    values = _as_float32_list(logits)
    n = len(values)
    if not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..31, got {precision}")
    total = 1 << precision
    if n == 0 or n > total // 2:
        raise ValueError(f"alphabet size must be in 1..{total // 2}, got {n}")
    budget = total - n

    m = -math.inf
    for v in values:  # NaN never compares greater
        if v > m:
            m = v
    argmax = next((i for i, v in enumerate(values) if v == m), 0)

    if m == -math.inf:
        weights = [1] * n
    elif m == math.inf:
        weights = [int(v == math.inf) for v in values]
    else:
        weights = [weight_of(v, m) for v in values]
    z = sum(weights)  # exact integers: order does not matter
    m_scale = (budget << 32) // z
    freqs = [1 + ((w * m_scale) >> 32) for w in weights]
    total_sum = sum(freqs)
    if total_sum > total:
        raise AssertionError("shares exceed the budget")
    freqs[argmax] += total - total_sum
    return freqs


def ideal_bits(logits, symbol: int) -> float:
    """-log2 softmax(logits)[symbol] with the quantizer's conventions (libm exp/log)."""
    values = _as_float32_list(logits)
    m = max((v for v in values if v == v), default=-math.inf)
    if m == -math.inf:
        return math.log2(len(values))
    xs = values[symbol]
    if m == math.inf:
        return math.log2(sum(v == math.inf for v in values)) if xs == math.inf else math.inf
    if not xs > -math.inf:
        return math.inf
    s = math.fsum(math.exp(v - m) for v in values if v == v)
    return (m + math.log(s) - xs) / math.log(2.0)


# --------------------------------------------------------------------- self-test


def selftest_logits() -> list[float]:
    """The input of ncz_selftest in cdf.c: 256 xorshift32 logits, NaN, -inf, a tied maximum."""
    x = 2463534242
    out = []
    for _ in range(256):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(((x >> 9) - (1 << 22)) / 131072.0)
    out[7], out[8], out[9], out[200] = math.nan, -math.inf, 40.0, 40.0
    return out


def selftest_hash() -> int:
    """SELFTEST_HASH in cdf.c: FNV-1a over the frequencies' 4 bytes at precisions 31 and 20."""
    logits = selftest_logits()
    h = 0xCBF29CE484222325
    for precision in (31, 20):
        for f in quantize(logits, precision):
            for byte in struct.pack("<I", f):  # little-endian, like the C loop's byte order
                h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h
