"""The engine's arithmetic (docs/engine.md) written again in numpy, as an oracle for cext/eng_*.c.

Every operation here is one IEEE float32 operation on numpy scalars or elementwise arrays (numpy
never fuses a multiply and an add), in the order the specification gives, so the C kernels must
agree bit for bit. GGUF blocks are decoded independently of the C code; tests check the decoded
values against the gguf package's own dequantization.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
Q8_0, Q5_0, Q4_K, Q6_K, F16, F32_TYPE = 8, 6, 12, 14, 1, 0
BLOCK_BYTES = {Q8_0: 34, Q5_0: 22, Q4_K: 144, Q6_K: 210}
BLOCK_VALUES = {Q8_0: 32, Q5_0: 32, Q4_K: 256, Q6_K: 256}


def decode(ggml_type: int, raw: np.ndarray, n_out: int, n_in: int):
    """(quants int32 [n_out, n_in], scale per 16 values float32 [n_out, n_in/16],
    min per 32 values float32 [n_out, n_in/32]) of a GGUF tensor's bytes."""
    rows = np.frombuffer(raw, np.uint8).reshape(n_out, -1)
    q = np.zeros((n_out, n_in), np.int32)
    sc = np.zeros((n_out, n_in // 16), np.float32)
    mn = np.zeros((n_out, n_in // 32), np.float32)
    if ggml_type == Q8_0:
        blocks = rows.reshape(n_out, -1, 34)
        d = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        q[:] = blocks[:, :, 2:].view(np.int8).reshape(n_out, n_in)
        sc[:] = np.repeat(d, 2, axis=1)
    elif ggml_type == Q5_0:
        blocks = rows.reshape(n_out, -1, 22)
        d = blocks[:, :, :2].copy().view(np.float16)[..., 0].astype(np.float32)
        qh = blocks[:, :, 2:6].copy().view("<u4")[..., 0].astype(np.int64)
        qs = blocks[:, :, 6:].astype(np.int64)
        j = np.arange(16)
        lo = (qs & 0x0F) | (((qh[..., None] >> j) << 4) & 0x10)
        hi = (qs >> 4) | ((qh[..., None] >> (j + 12)) & 0x10)
        q[:] = np.concatenate([lo, hi], axis=2).reshape(n_out, n_in) - 16
        sc[:] = np.repeat(d, 2, axis=1)
    elif ggml_type == Q4_K:
        blocks = rows.reshape(n_out, -1, 144)
        d = blocks[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        dmin = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        s = blocks[:, :, 4:16].astype(np.int32)
        qs = blocks[:, :, 16:].astype(np.int32)
        nsb = blocks.shape[1]
        for j in range(8):
            if j < 4:
                scj, mj = s[..., j] & 63, s[..., j + 4] & 63
            else:
                scj = (s[..., j + 4] & 0x0F) | ((s[..., j - 4] >> 6) << 4)
                mj = (s[..., j + 4] >> 4) | ((s[..., j] >> 6) << 4)
            qq = qs[..., 32 * (j // 2) : 32 * (j // 2) + 32]
            vals = (qq >> 4) if j % 2 else (qq & 0x0F)
            for b in range(nsb):
                col = b * 256 + 32 * j
                q[:, col : col + 32] = vals[:, b]
                sc[:, col // 16 : col // 16 + 2] = (d[:, b] * scj[:, b].astype(np.float32))[:, None]
                mn[:, col // 32] = dmin[:, b] * mj[:, b].astype(np.float32)
    elif ggml_type == Q6_K:
        blocks = rows.reshape(n_out, -1, 210)
        for b in range(blocks.shape[1]):
            blk = blocks[:, b]
            ql, qh = blk[:, :128].astype(np.int32), blk[:, 128:192].astype(np.int32)
            scales = blk[:, 192:208].view(np.int8).astype(np.float32)
            d = blk[:, 208:210].copy().view(np.float16)[:, 0].astype(np.float32)
            y = np.zeros((n_out, 256), np.int32)
            for half in range(2):
                l_, h_ = ql[:, 64 * half : 64 * half + 64], qh[:, 32 * half : 32 * half + 32]
                base = 128 * half
                y[:, base : base + 32] = ((l_[:, :32] & 0x0F) | (((h_ >> 0) & 3) << 4)) - 32
                y[:, base + 32 : base + 64] = ((l_[:, 32:] & 0x0F) | (((h_ >> 2) & 3) << 4)) - 32
                y[:, base + 64 : base + 96] = ((l_[:, :32] >> 4) | (((h_ >> 4) & 3) << 4)) - 32
                y[:, base + 96 : base + 128] = ((l_[:, 32:] >> 4) | (((h_ >> 6) & 3) << 4)) - 32
            q[:, 256 * b : 256 * b + 256] = y
            sc[:, 16 * b : 16 * b + 16] = d[:, None] * scales
    else:
        raise ValueError(ggml_type)
    return q, sc, mn


def round_away(x: np.ndarray) -> np.ndarray:
    half = np.copysign(F32(0.5), x).astype(np.float32)
    return np.trunc((x + half).astype(np.float32)).astype(np.int32)


def quantize_activations(x: np.ndarray):
    """(q int32 [rows, n], d float32 [rows, n/32], sum int32 [rows, n/32])"""
    rows, n = x.shape
    blocks = x.astype(np.float32).reshape(rows, n // 32, 32)
    amax = np.abs(blocks).max(axis=2)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, F32(127.0) / np.where(amax > 0, amax, F32(1)), F32(0)).astype(np.float32)
    d = (amax / F32(127.0)).astype(np.float32)
    q = np.clip(round_away((blocks * inv[..., None]).astype(np.float32)), -127, 127)
    return q.reshape(rows, n), d, q.sum(axis=2).astype(np.int32)


def matmul(ggml_type: int, raw: np.ndarray, n_out: int, n_in: int, x: np.ndarray) -> np.ndarray:
    """out[r, o] by docs/engine.md's block formula."""
    wq, sc, mn = decode(ggml_type, raw, n_out, n_in)
    aq, ad, asum = quantize_activations(x)
    nb = n_in // 32
    out = np.zeros((x.shape[0], n_out), np.float32)
    for r in range(x.shape[0]):
        acc = np.zeros(n_out, np.float32)
        for b in range(nb):
            w = wq[:, 32 * b : 32 * b + 32]
            a = aq[r, 32 * b : 32 * b + 32]
            d = ad[r, b]
            if ggml_type == Q6_K:
                lo = (w[:, :16] @ a[:16]).astype(np.float32)
                hi = (w[:, 16:] @ a[16:]).astype(np.float32)
                p = lo * (sc[:, 2 * b] * d) + hi * (sc[:, 2 * b + 1] * d)
            else:
                dot = (w @ a).astype(np.float32)
                p = dot * (sc[:, 2 * b] * d)
                if ggml_type == Q4_K:
                    p = p - F32(asum[r, b]) * (mn[:, b] * d)
            acc = (acc + p.astype(np.float32)).astype(np.float32)
        out[r] = acc
    return out


def sum16(p: np.ndarray) -> np.float32:
    a = p[:8] + p[8:]
    b = a[:4] + a[4:]
    c = b[:2] + b[2:]
    return F32(c[0] + c[1])


def expf(x: np.ndarray) -> np.ndarray:
    """ncz_expf, elementwise in float32."""
    x = np.clip(np.asarray(x, np.float32), F32(-87.0), F32(88.0))
    t = x * F32(1.44269504088896341)
    n = (t + F32(12582912.0)) - F32(12582912.0)
    r = x - n * F32(0.693359375)
    r = r - n * F32(-2.12194440e-4)
    z = r * r
    p = np.full_like(r, F32(1.9875691500e-4))
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        p = p * r + F32(c)
    p = p * z + r + F32(1.0)
    scale = ((n.astype(np.int32) + 127).astype(np.uint32) << 23).view(np.float32)
    return (p * scale).astype(np.float32)


def attend(k: np.ndarray, v: np.ndarray, k0: np.ndarray, v0: np.ndarray, offset: int, q: np.ndarray,
           lo: int, hi: int, with_bos: bool) -> np.ndarray:
    """One query head: k, v as [ring, head_dim] halves by slot (the k tiles already untiled)."""
    ring, hd = v.shape
    kf, vf = k.astype(np.float32), v.astype(np.float32)
    positions = np.arange(lo, hi + 1)
    slots = (positions + offset) % ring
    s = np.zeros(len(positions), np.float32)
    for d in range(hd):
        s = s + q[d] * kf[slots, d]
    m = np.float32(-np.inf)
    if with_bos:
        s0 = F32(0)
        for d in range(hd):
            s0 = F32(s0 + q[d] * F32(k0[d]))
        m = s0
    if len(s):
        m = max(m, s.max())
    m = F32(m + F32(0))
    e = expf(s - m)
    part = np.zeros(16, np.float32)
    for i, slot in enumerate(slots):
        part[slot % 16] = F32(part[slot % 16] + e[i])
    total = sum16(part)
    o = np.zeros(hd, np.float32)
    if with_bos:
        e0 = expf(np.array([s0 - m], np.float32))[0]
        total = F32(e0 + total)
        o = o + e0 * v0.astype(np.float32)
    for i, slot in enumerate(slots):
        o = o + e[i] * vf[slot]
    return (o * (F32(1.0) / total)).astype(np.float32)
