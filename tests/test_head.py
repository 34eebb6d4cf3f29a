"""nczip's own output head (cext/head.c, nczip/models/head.py): exact arithmetic, and its place
in the llama.cpp backend (backend id llama.cpp-fa2-h8)."""
from __future__ import annotations

import numpy as np
import pytest

from nczip import _cext
from nczip.models.head import GROUP, Q8Head, output_tensor, pack_q8_0


def _reference_logits(quants: np.ndarray, scales: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The head's arithmetic spelled out in numpy: activations quantized per 32-value block
    (round half away from zero), exact integer block dot products, then per logit
    acc = acc + float32(dot) * (dw * da), block after block, in float32."""
    rows, n_embd = hidden.shape
    nb = n_embd // 32
    x = hidden.reshape(rows, nb, 32).astype(np.float32)
    amax = np.abs(x).max(axis=2)
    da = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    scaled = (x * inv[:, :, None]).astype(np.float32)
    q = np.where(scaled >= 0, scaled + np.float32(0.5), scaled - np.float32(0.5)).astype(np.float32)
    q = np.clip(np.trunc(q), -127, 127).astype(np.int64)
    dots = np.einsum("rbj,vbj->rvb", q, quants.astype(np.int64))  # exact integers
    out = np.zeros((rows, quants.shape[0]), dtype=np.float32)
    for b in range(nb):
        s = (scales[None, :, b] * da[:, None, b]).astype(np.float32)
        out = (out + (dots[:, :, b].astype(np.float32) * s).astype(np.float32)).astype(np.float32)
    return out


def _random_q8_file(tmp_path, n_vocab: int, n_embd: int, seed: int = 0):
    """A file holding just a Q8_0 matrix (offset 0) and its quants and scales."""
    rng = np.random.default_rng(seed)
    nb = n_embd // 32
    quants = rng.integers(-127, 128, size=(n_vocab, nb, 32), dtype=np.int8)
    scales = (rng.random((n_vocab, nb)) * 0.01 + 1e-4).astype(np.float16)
    blocks = np.zeros((n_vocab, nb, 34), dtype=np.uint8)
    blocks[:, :, :2] = scales.view(np.uint8).reshape(n_vocab, nb, 2)
    blocks[:, :, 2:] = quants.view(np.uint8)
    path = tmp_path / "q8.bin"
    path.write_bytes(blocks.tobytes())
    return path, quants, scales.astype(np.float32)


@pytest.mark.parametrize("n_vocab", [16, 37, 1000])
def test_head_matches_its_arithmetic_exactly(tmp_path, n_vocab):
    path, quants, scales = _random_q8_file(tmp_path, n_vocab, 96)
    head = Q8Head(*pack_q8_0(path, 0, n_vocab, 96), n_vocab, 96)
    rng = np.random.default_rng(1)
    hidden = (rng.standard_normal((11, 96)) * 4).astype(np.float32)
    hidden[3, :32] = 0  # an all-zero block: scale 0, no division by zero
    expected = _reference_logits(quants, scales, hidden)
    assert np.array_equal(head(hidden), expected)
    head.portable = True
    assert np.array_equal(head(hidden), expected)


def test_simd_kernel_rows_and_threads_give_the_same_bits(tmp_path):
    """Rows are computed in chunks of up to 16 (each size 1-16 a kernel of its own), each group
    prefetching the weights two groups on, and the vocabulary is split between threads: neither
    may change a bit, nor may the portable loop."""
    n_vocab, n_embd = 777, 128
    path, _, _ = _random_q8_file(tmp_path, n_vocab, n_embd, seed=2)
    parts = pack_q8_0(path, 0, n_vocab, n_embd)
    hidden = (np.random.default_rng(3).standard_normal((40, n_embd)) * 2).astype(np.float32)
    one = Q8Head(*parts, n_vocab, n_embd, threads=1)
    full = one(hidden).copy()
    for rows in range(1, 41):
        assert np.array_equal(one(hidden[:rows]), full[:rows]), rows
    for threads in (2, 3):
        many = Q8Head(*parts, n_vocab, n_embd, threads=threads)
        assert np.array_equal(many(hidden), full)
        many.close()
    one.portable = True
    assert np.array_equal(one(hidden), full)
    if not _cext.head_fast_kernel():
        pytest.skip("this CPU has no AVX-512 VNNI: only the portable loop ran")


def test_head_refuses_bad_shapes(tmp_path):
    path, _, _ = _random_q8_file(tmp_path, 32, 64)
    head = Q8Head(*pack_q8_0(path, 0, 32, 64), 32, 64)
    with pytest.raises(ValueError):
        head(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError):
        head(np.zeros((0, 64), np.float32))
    with pytest.raises(ValueError):  # the C side checks buffer sizes too
        _cext.head_q8(head.packed, head.wsum, head.dw, np.zeros((1, 64), np.float32),
                      np.zeros((1, 31), np.float32), 32, 64, 1, 0, 2)


def test_output_tensor_reads_the_gguf_table_as_gguf_does(tiny_gguf_q8, tiny_gguf):
    import gguf

    for path, type_id in ((tiny_gguf_q8, 8), (tiny_gguf, 0)):
        reader = gguf.GGUFReader(str(path))
        t = next(t for t in reader.tensors if t.name == "token_embd.weight")
        name, found_type, n_vocab, n_embd, offset, arch = output_tensor(path)
        assert (name, found_type, n_vocab, n_embd) == ("token_embd.weight", type_id, int(t.shape[1]), int(t.shape[0]))
        assert arch == "gemma3"
        assert offset == t.data_offset
        assert (Q8Head.from_gguf(path) is None) == (type_id != 8)


def test_head_of_the_tiny_model_is_its_dequantized_matrix(tiny_gguf_q8):
    import gguf

    reader = gguf.GGUFReader(str(tiny_gguf_q8))
    t = next(t for t in reader.tensors if t.name == "token_embd.weight")
    weights = gguf.dequantize(t.data, t.tensor_type).reshape(int(t.shape[1]), int(t.shape[0]))
    head = Q8Head.from_gguf(tiny_gguf_q8)
    hidden = np.random.default_rng(4).standard_normal((5, head.n_embd)).astype(np.float32)
    exact = hidden.astype(np.float64) @ weights.T.astype(np.float64)
    # Activations are quantized to 8 bits per block, as llama.cpp's Q8_0 product does.
    assert np.max(np.abs(head(hidden) - exact)) < 0.02 * np.max(np.abs(exact))
    assert GROUP == 16


# -- in the llama.cpp backend -----------------------------------------------------------------
def _model(path, threads=1, n_ctx=1024, lanes=4):
    from nczip.models.llama_cpp import LlamaCppModel
    from nczip.models.registry import resolve_model

    model = LlamaCppModel(resolve_model(str(path)), n_ctx=n_ctx, threads=threads)
    model.configure(n_ctx, lanes)
    return model


def test_the_own_head_is_the_default_only_for_a_q8_0_output(tiny_gguf_q8, tiny_gguf):
    from nczip.errors import NczipError
    from nczip.models.llama_cpp import BACKEND_ID, HEAD_BACKEND_ID

    q8, f32 = _model(tiny_gguf_q8), _model(tiny_gguf)
    try:
        assert q8.default_backend_id == HEAD_BACKEND_ID
        assert f32.default_backend_id == BACKEND_ID
        with pytest.raises(NczipError, match="Q8_0"):
            f32.use_backend_id(HEAD_BACKEND_ID)
    finally:
        q8.close()
        f32.close()


def test_only_architectures_with_a_plain_head_get_ours(tiny_gguf_q8, monkeypatch):
    """A graph that does more after the final norm (a logit scale, soft-capping) would make our
    logits differ from llama.cpp's: architectures not known to end plainly keep llama.cpp's."""
    from nczip.models import head, llama_cpp

    assert head.output_tensor(tiny_gguf_q8).architecture == "gemma3"
    monkeypatch.setattr(head, "PLAIN_HEAD_ARCHITECTURES", frozenset())
    model = _model(tiny_gguf_q8)
    try:
        assert model.default_backend_id == llama_cpp.BACKEND_ID
    finally:
        model.close()


def _rows(model, backend_id, lanes_rows):
    """Prefill four lanes past 512 cells, then step the given lanes: logits per step."""
    model.use_backend_id(backend_id)
    model.reset()
    toks = (model.tokenize(b"the cat sat on the mat and then it ran away. " * 40) * 4)[:600]
    for lane in range(4):
        model.evaluate([model.bos, *toks], 0, lane)
    out, filled = [], [1 + len(toks)] * 4
    for step, lanes in enumerate(lanes_rows):
        rows = model.evaluate_rows([toks[step]] * len(lanes), [filled[lane] for lane in lanes], lanes)
        for lane in lanes:
            filled[lane] += 1
        out.append(np.array(rows, copy=True))
    return out


STEPS = [[0, 1, 2, 3], [1, 3], [0, 2, 3], [2]]


def test_own_head_rows_match_llama_cpp_s_in_every_call_shape(tiny_gguf_q8):
    """Consecutive lanes, scattered lanes (llama.cpp splits them into micro-batches, whose hidden
    states must land on the right rows) and a single lane."""
    from nczip.models.llama_cpp import BACKEND_ID, HEAD_BACKEND_ID

    model = _model(tiny_gguf_q8)
    try:
        ours = _rows(model, HEAD_BACKEND_ID, STEPS)
        theirs = _rows(model, BACKEND_ID, STEPS)
    finally:
        model.close()
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) < 0.02 * np.max(np.abs(b))


def test_own_head_floats_do_not_depend_on_thread_count(tiny_gguf_q8):
    from nczip.models.llama_cpp import HEAD_BACKEND_ID

    results = []
    for threads in (1, 2):
        model = _model(tiny_gguf_q8, threads=threads)
        try:
            results.append(_rows(model, HEAD_BACKEND_ID, STEPS))
        finally:
            model.close()
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_round_trips_with_the_own_head_and_old_archives_still_decode(tiny_gguf_q8):
    from corpora.samples import edge_cases
    from nczip import container
    from nczip.api import Compressor
    from nczip.models.llama_cpp import BACKEND_ID, HEAD_BACKEND_ID

    with Compressor(model=str(tiny_gguf_q8), route="llm", threads=2, backend="llama") as c:
        for name, data in edge_cases().items():
            archive = c.compress(data)
            if data:
                assert container.read_header(archive)[0].backend == HEAD_BACKEND_ID, name
            assert c.decompress(archive) == data, name
    text = edge_cases()["ascii"]
    with Compressor(model=str(tiny_gguf_q8), route="llm", threads=2, backend_id=BACKEND_ID) as c:
        old = c.compress(text)  # as nczip 0.x before the own head wrote it
    assert container.read_header(old)[0].backend == BACKEND_ID
    with Compressor(model=str(tiny_gguf_q8), route="llm", threads=1) as fresh:
        assert fresh.decompress(old) == text
