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
CUTOFF = 64.0


def _from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


# Same bit patterns as cdf.c: log2(e), and a_k = ln2^k / k! for k = 0..12, rounded to nearest.
LOG2E = _from_bits(0x3FF71547652B82FE)
EXP2_POLY = tuple(
    _from_bits(b)
    for b in (
        0x3FF0000000000000, 0x3FE62E42FEFA39EF, 0x3FCEBFBDFF82C58F, 0x3FAC6B08D704A0C0,
        0x3F83B2AB6FBA4E77, 0x3F55D87FE78A6731, 0x3F2430912F86C787, 0x3EEFFCBFC588B0C7,
        0x3EB62C0223A5C824, 0x3E7B5253D395E7C4, 0x3E3E4CF5158B8ECA, 0x3DFE8CAC7351BB25,
        0x3DBC3BD650FC2986,
    )
)


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


def exp_approx(x: float) -> float:
    """e**x for x in [-CUTOFF, 0], exactly as cdf.c computes it."""
    y = x * LOG2E
    n = int(y)  # truncates toward zero, like the C cast
    if float(n) > y:
        n -= 1
    f = y - float(n)
    a = EXP2_POLY
    f2 = f * f
    f4 = f2 * f2
    f8 = f4 * f4
    q0 = a[0] + a[1] * f
    q1 = a[2] + a[3] * f
    q2 = a[4] + a[5] * f
    q3 = a[6] + a[7] * f
    q4 = a[8] + a[9] * f
    q5 = a[10] + a[11] * f
    r0 = q0 + q1 * f2
    r1 = q2 + q3 * f2
    r2 = q4 + q5 * f2
    s0 = r0 + r1 * f4
    s1 = r2 + a[12] * f4
    p = s0 + s1 * f8
    return p * _from_bits((n + 1023) << 52)


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
        weights = [1.0] * n
    elif m == math.inf:
        weights = [1.0 if v == math.inf else 0.0 for v in values]
    else:
        weights = []
        for v in values:
            x = v - m
            weights.append(exp_approx(x) if x >= -CUTOFF else 0.0)
    s = 0.0
    for w in weights:
        s += w
    scale = float(budget) / s
    freqs = [1 + int(w * scale) for w in weights]
    diff = total - sum(freqs)
    freqs[argmax] += diff
    if not 1 <= freqs[argmax] <= total:
        raise AssertionError("correction left the maximum's frequency out of range")
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


def selftest_weights(logits: Sequence[float]) -> list[float]:
    """The weights cdf.c leaves in its workspace for logits that have a finite maximum."""
    m = max(v for v in logits if v == v)
    return [exp_approx(v - m) if v - m >= -CUTOFF else 0.0 for v in logits]


def selftest_hash() -> int:
    """SELFTEST_HASH in cdf.c: FNV-1a over each weight's 8 bytes and frequency's 4 bytes."""
    logits = selftest_logits()
    freqs = quantize(logits, 31)
    h = 0xCBF29CE484222325
    for w, f in zip(selftest_weights(logits), freqs):
        data = struct.pack("<dI", w, f)  # little-endian, like the C loop's byte order
        for byte in data:
            h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h
