"""nczip's own engine (cext/eng_*.c): every kernel against the specification written again in
numpy (engine_reference.py), every SIMD kernel against the portable loop, and a model's logits
against every way of calling it (threads, lanes, prefill blocks). These tests run on any CPU:
the kernels a CPU lacks are capped to the best it has, so they compare what it can run."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_budget import examples

import engine_reference as ref
from nczip import _cext

KERNELS = _cext.engine_kernels()  # the portable loops and every SIMD level this CPU runs


# ---- elementary functions ----------------------------------------------------------------

def test_expf_is_accurate_and_is_its_specification():
    x = np.concatenate([np.linspace(-90, 90, 200_001, dtype=np.float32), np.float32([0.0, -0.0, 1e-30, -1e-30])])
    out = np.empty_like(x)
    _cext.engine_expf(x, out)
    assert np.array_equal(out.view(np.uint32), ref.expf(x).view(np.uint32))
    inside = (x >= -87) & (x <= 88)
    exact = np.exp(x[inside].astype(np.float64))
    assert np.max(np.abs(out[inside] - exact) / exact) < 3e-7  # about 2 ulp
    assert out[x < -87].min() == out[x < -87].max() > 0  # clamped: e^-87, never subnormal


def test_halves_round_to_nearest_even_as_numpy_does():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    special = np.float32([0.0, -0.0, 65504.0, 65519.99, 65520.0, -65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10])
    x = np.concatenate([x, special, rng.normal(0, 3, 100_000).astype(np.float32)])
    out = np.empty(len(x), np.uint16)
    _cext.engine_to_half(x, out)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    assert np.array_equal(out, expected)


@pytest.mark.parametrize("base", [10_000.0, 1_000_000.0])
@pytest.mark.parametrize("position", [0, 1, 7, 4095, 123_457, 1_048_576])
def test_rope_angles_are_cos_and_sin_of_position_times_frequency(base, position):
    cos, sin = _cext.engine_rope_trig(base, position, 256)
    freq = base ** (-np.arange(128) * 2 / 256)
    angle = position * freq
    assert np.allclose(cos, np.cos(angle), atol=2e-7) and np.allclose(sin, np.sin(angle), atol=2e-7)


# ---- weights ------------------------------------------------------------------------------

def random_tensor(ggml_type: int, n_out: int, n_in: int, seed: int) -> np.ndarray:
    """Random bytes of a GGUF tensor, its f16 scales finite and of a sensible size."""
    rng = np.random.default_rng(seed)
    if ggml_type in (ref.F32_TYPE, ref.F16):
        x = rng.normal(0, 1, (n_out, n_in)) * rng.choice([1e-3, 1, 30], size=(n_out, 1))
        return x.astype(np.float32 if ggml_type == ref.F32_TYPE else np.float16).view(np.uint8).ravel()
    nbytes, nvals = ref.BLOCK_BYTES[ggml_type], ref.BLOCK_VALUES[ggml_type]
    raw = rng.integers(0, 256, (n_out, n_in // nvals, nbytes), dtype=np.uint8)
    scales = lambda n: rng.uniform(1e-4, 0.05, n).astype(np.float16).view(np.uint8).reshape(*n, 2)
    if ggml_type in (ref.Q8_0, ref.Q5_0):
        raw[..., 0:2] = scales(raw.shape[:2])
    elif ggml_type == ref.Q4_K:
        raw[..., 0:2] = scales(raw.shape[:2])
        raw[..., 2:4] = scales(raw.shape[:2])
    else:  # Q6_K: d last
        raw[..., 208:210] = scales(raw.shape[:2])
    return raw.ravel()


QUANT_TYPES = [ref.Q8_0, ref.Q5_0, ref.Q4_K, ref.Q6_K]


@pytest.mark.parametrize("ggml_type", QUANT_TYPES)
def test_weights_are_the_gguf_values_exactly(ggml_type):
    import gguf

    n_out, n_in = 37, 512
    raw = random_tensor(ggml_type, n_out, n_in, seed=ggml_type)
    out = np.empty((n_out, n_in), np.float32)
    _cext.engine_dequantize(ggml_type, raw, n_out, n_in, out)
    expected = gguf.quants.dequantize(raw.reshape(n_out, -1), gguf.GGMLQuantizationType(ggml_type))
    assert np.array_equal(out, expected)
    q, sc, mn = ref.decode(ggml_type, raw, n_out, n_in)  # the oracle's own decoding agrees
    assert np.array_equal((np.repeat(sc, 16, axis=1) * q - np.repeat(mn, 32, axis=1)).astype(np.float32), expected)


@pytest.mark.parametrize("ggml_type", [ref.F32_TYPE, ref.F16])
def test_unquantized_weights_become_q8_0_by_the_activation_rule(ggml_type):
    n_out, n_in = 19, 96
    raw = random_tensor(ggml_type, n_out, n_in, seed=3)
    x = np.frombuffer(raw.tobytes(), np.float32 if ggml_type == ref.F32_TYPE else np.float16).astype(np.float32)
    q, d, _ = ref.quantize_activations(x.reshape(n_out, n_in))
    out = np.empty((n_out, n_in), np.float32)
    _cext.engine_dequantize(ggml_type, raw, n_out, n_in, out)
    assert np.array_equal(out, (np.repeat(d, 32, axis=1) * q).astype(np.float32))


def activations(rows: int, n_in: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, n_in)).astype(np.float32)
    x[:, ::7] *= 40  # outliers, as in a transformer's residual stream
    x[0, :32] = 0  # a block of zeros: scale 0
    x[-1, 32:40] = -x[-1, 32:40]
    return x


@pytest.mark.parametrize("ggml_type", QUANT_TYPES + [ref.F32_TYPE])
@pytest.mark.parametrize("n_out, rows", [(1, 1), (16, 3), (37, 17), (64, 40)])
def test_matmul_kernels_compute_the_specification(ggml_type, n_out, rows):
    n_in = 512
    raw = random_tensor(ggml_type, n_out, n_in, seed=n_out)
    x = activations(rows, n_in, seed=rows)
    if ggml_type == ref.F32_TYPE:  # the reference reads its Q8_0 form
        w = np.frombuffer(raw.tobytes(), np.float32).reshape(n_out, n_in)
        q, d, _ = ref.quantize_activations(w)
        q8 = np.zeros((n_out, n_in // 32, 34), np.uint8)
        q8[..., 2:] = q.reshape(n_out, -1, 32).astype(np.int8).view(np.uint8)
        expected = None  # the float32 scale has no f16 form: compare the kernels with each other
    else:
        expected = ref.matmul(ggml_type, raw, n_out, n_in, x)
    results = []
    for kernel in KERNELS:
        out = np.full((rows, n_out), np.nan, np.float32)
        _cext.engine_matmul(ggml_type, raw, n_out, n_in, x, out, kernel)
        results.append(out)
        if expected is not None:
            assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), f"kernel {kernel}"
    for out in results[1:]:
        assert np.array_equal(out.view(np.uint32), results[0].view(np.uint32))


@settings(max_examples=examples(40), deadline=None)
@given(ggml_type=st.sampled_from(QUANT_TYPES), n_out=st.integers(1, 48), rows=st.integers(1, 24),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([1e-6, 1.0, 1e4]))
def test_matmul_kernels_agree_on_any_shape(ggml_type, n_out, rows, seed, scale):
    n_in = 256
    raw = random_tensor(ggml_type, n_out, n_in, seed=seed % 1000)
    x = (activations(rows, n_in, seed=seed) * scale).astype(np.float32)
    outs = []
    for kernel in KERNELS:
        out = np.empty((rows, n_out), np.float32)
        _cext.engine_matmul(ggml_type, raw, n_out, n_in, x, out, kernel)
        outs.append(out.view(np.uint32).copy())
    assert all(np.array_equal(o, outs[0]) for o in outs)


# ---- attention ------------------------------------------------------------------------------

def tiled_keys(k: np.ndarray) -> np.ndarray:
    """[ring][head_dim] -> the cache's [ring / 16][head_dim][16]"""
    ring, hd = k.shape
    return np.ascontiguousarray(k.reshape(ring // 16, 16, hd).transpose(0, 2, 1))


def attention_case(ring, hd, n_q, offset, lo, hi, with_bos, seed):
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 1, (ring, hd)).astype(np.float16)
    v = rng.normal(0, 3, (ring, hd)).astype(np.float16)
    k0 = rng.normal(0, 1, hd).astype(np.float16)
    v0 = rng.normal(0, 3, hd).astype(np.float16)
    q = (rng.normal(0, 1, (n_q, hd)) * 0.5).astype(np.float32)
    args = (tiled_keys(k).view(np.uint16), v.view(np.uint16), k0.view(np.uint16), v0.view(np.uint16), ring, offset, hd)
    return (k, v, k0, v0, q), args


@pytest.mark.parametrize("ring, hd, n_q, offset, lo, hi, with_bos", [
    (64, 32, 1, 0, 1, 10, True),      # a short window with BOS
    (64, 32, 2, 5, 3, 40, False),     # starting mid-tile
    (64, 256, 4, 60, 1, 63, True),    # the whole ring, wrapping
    (96, 256, 4, 17, 30, 29, True),   # BOS alone
    (48, 64, 3, 47, 12, 50, False),   # three heads, a wrapped window
    (528, 256, 4, 1000, 600, 1110, False),  # Gemma's sliding-window ring, shifted
])
def test_attention_kernels_compute_the_specification(ring, hd, n_q, offset, lo, hi, with_bos):
    (k, v, k0, v0, q), args = attention_case(ring, hd, n_q, offset, lo, hi, with_bos, seed=ring + lo)
    expected = np.stack([ref.attend(k, v, k0, v0, offset, q[h], lo, hi, with_bos) for h in range(n_q)])
    for kernel in KERNELS:
        out = np.full((n_q, hd), np.nan, np.float32)
        _cext.engine_attend(*args, q, lo, hi, with_bos, out, kernel)
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), f"kernel {kernel}"


@settings(max_examples=examples(60), deadline=None)
@given(tiles=st.integers(1, 8), hd=st.sampled_from([16, 32, 48, 256]), n_q=st.integers(1, 8),
       offset=st.integers(0, 10_000), start=st.integers(1, 200), length=st.integers(0, 200),
       with_bos=st.booleans(), seed=st.integers(0, 2**31))
def test_attention_kernels_agree_on_any_window(tiles, hd, n_q, offset, start, length, with_bos, seed):
    ring = 16 * tiles
    lo, hi = start, start + min(length, ring) - 1
    if hi < lo and not with_bos:
        with_bos = True  # a row always sees something: itself
    (_, _, _, _, q), args = attention_case(ring, hd, n_q, offset, lo, hi, with_bos, seed)
    outs = []
    for kernel in KERNELS:
        out = np.empty((n_q, hd), np.float32)
        _cext.engine_attend(*args, q, lo, hi, with_bos, out, kernel)
        outs.append(out.view(np.uint32).copy())
    assert all(np.array_equal(o, outs[0]) for o in outs)
