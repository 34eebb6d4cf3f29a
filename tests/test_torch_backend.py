"""The PyTorch / transformers backend (nczip[torch]) on a tiny random Gemma-3 model directory.

Skipped where torch or transformers is not installed. The real-model tests are in
test_real_model.py (marked real_model).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from nczip import container  # noqa: E402
from nczip.api import Compressor  # noqa: E402
from nczip.errors import ModelMismatchError, NczipError  # noqa: E402
from nczip.models.llm import LockstepLanes  # noqa: E402
from nczip.models.registry import model_from_path  # noqa: E402
from nczip.models.torch_model import TorchModel, backend_id, parse_backend_id  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_hf_model import write_tiny_hf_model  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return write_tiny_hf_model(tmp_path_factory.mktemp("tiny_hf") / "tiny-gemma3")


def make_model(hf_dir, *, n_ctx=64, n_lanes=3, threads=1, n_batch=8) -> TorchModel:
    return TorchModel(model_from_path(hf_dir), n_ctx=n_ctx, threads=threads, n_batch=n_batch, n_lanes=n_lanes)


def reference_logits(model: TorchModel, ids: list[int]) -> np.ndarray:
    """transformers' own forward pass over the whole sequence: logits after every token."""
    with torch.inference_mode():
        return model._hf(torch.tensor([ids])).logits[0].float().numpy()


def sequence(model: TorchModel, n: int, seed: int = 0) -> list[int]:
    """BOS and n - 1 random tokens (the same for the same seed)."""
    return [model.bos] + [int(t) for t in np.random.default_rng(seed).integers(3, model.n_vocab, n - 1)]


def test_prefill_and_rows_match_transformers_forward(hf_dir):
    """Chunked prefill (8 tokens a call) and then one row a call, past the sliding layers'
    ring of 16 + 8 slots: the same logits as transformers' forward over the whole sequence."""
    model = make_model(hf_dir)
    ids = sequence(model, 60)
    ref = reference_logits(model, ids)
    got = [np.array(model.evaluate(ids[:21], 0, lane=1), copy=True)]
    for p in range(21, 60):
        got.append(np.array(model.evaluate_rows([ids[p]], [p], [1])[0], copy=True))
    np.testing.assert_allclose(np.stack(got), ref[20:], atol=2e-4, rtol=0)
    model.close()


def test_lanes_in_one_call_are_independent(hf_dir):
    """Three lanes at different positions in one call give each lane's own logits: a lane
    alone and the same lane among others differ at most by float rounding."""
    model = make_model(hf_dir)
    seqs = [sequence(model, 40, seed) for seed in range(3)]
    refs = [reference_logits(model, s) for s in seqs]
    starts = [10, 17, 25]  # lanes sit at different positions
    for lane, (s, start) in enumerate(zip(seqs, starts)):
        model.evaluate(s[:start], 0, lane)
    for step in range(12):
        rows = model.evaluate_rows(
            [s[start + step] for s, start in zip(seqs, starts)], [start + step for start in starts], [0, 1, 2]
        )
        for lane in range(3):
            np.testing.assert_allclose(rows[lane], refs[lane][starts[lane] + step], atol=2e-4, rtol=0)
    model.close()


def test_rows_of_a_lane_subset_and_copy_lane(hf_dir):
    """Rows for lanes 0 and 2 only (not a contiguous range: the store is indexed, not sliced), and
    copy_lane: a copied lane continues exactly like its source."""
    model = make_model(hf_dir)
    s = sequence(model, 30)
    model.evaluate(s[:20], 0, 0)
    model.copy_lane(0, 2)
    rows = model.evaluate_rows([s[20], s[20]], [20, 20], [0, 2])
    assert np.array_equal(rows[0], rows[1])
    np.testing.assert_allclose(rows[0], reference_logits(model, s)[20], atol=2e-4, rtol=0)
    model.close()


def test_reused_context_gives_identical_floats(hf_dir):
    """reset and clear_lane make a context that computes exactly what a fresh one does."""
    fresh = make_model(hf_dir)
    s = sequence(fresh, 30)
    expected = np.array(fresh.evaluate(s, 0, 0), copy=True)
    used = make_model(hf_dir)
    used.evaluate(sequence(used, 50, seed=1), 0, 0)
    used.clear_lane(0)
    assert np.array_equal(used.evaluate(s, 0, 0), expected)
    used.evaluate(sequence(used, 50, seed=2), 0, 1)
    used.reset()
    assert np.array_equal(used.evaluate(s, 0, 0), expected)
    fresh.close()
    used.close()


def test_two_models_with_the_same_threads_compute_the_same_floats(hf_dir):
    results = []
    for _ in range(2):
        model = make_model(hf_dir, threads=2)
        s = sequence(model, 40)
        out = [np.array(model.evaluate(s[:30], 0, 0), copy=True)]  # the last chunk has 6 rows
        model.copy_lane(0, 1)
        model.copy_lane(0, 2)
        for p in range(30, 36):
            out.append(np.array(model.evaluate_rows([s[p]] * 3, [p] * 3, [0, 1, 2]), copy=True))
        results.append(out)
        model.close()
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_cpu_archives_record_their_thread_count():
    """On some CPUs MKL rounds small products differently with 1 and 2 threads (seen on the AMD
    EPYC machines of 2026-11; not on a Xeon with AMX): the id carries the count, so that a decoder
    computes as the encoder did whatever the CPU does."""
    assert backend_id("cpu", 2) == "torch-cpu-f32-t2" and backend_id("cuda") == "torch-cuda-f32"
    assert parse_backend_id("torch-cpu-f32-t2") == ("cpu", 2)
    assert parse_backend_id("torch-cuda-f32") == ("cuda", None)
    for bad in ("torch-cpu-f32", "torch-cpu-f32-t0", "torch-cpu-f32-t02", "torch-cpu-f32-t257", "torch-cpu-f32-tx",
                "torch-cuda-f16", "llama.cpp-fa"):
        assert parse_backend_id(bad) is None


def test_positions_past_the_context_are_refused(hf_dir):
    model = make_model(hf_dir, n_ctx=32)
    with pytest.raises(NczipError, match="outside the context"):
        model.evaluate_rows([5], [32], [0])
    model.close()


def test_lockstep_lanes_slide_in_lockstep(hf_dir):
    """LockstepLanes over the torch model: windows slide (prefill calls) while other lanes take
    rows; the encoder's and a second model's calls give identical logits."""
    streams = []
    for _ in range(2):
        model = make_model(hf_dir, n_ctx=40, n_lanes=3)
        lanes = LockstepLanes(model, window=40, keep=12, n_lanes=3)
        s = sequence(model, 200)
        out = [np.stack(lanes.start())]
        for step in range(60):
            out.append(np.stack(lanes.advance([0, 1, 2], [s[step], s[step + 50], s[step + 100]])))
        streams.append(out)
        model.close()
    for a, b in zip(*streams):
        assert np.array_equal(a, b)


# -- through the Compressor -------------------------------------------------------------------
EDGE_CASES = {
    "empty": b"",
    "one byte": b"A",
    "ascii": b"Alice was beginning to get very tired of sitting by her sister on the bank.\n" * 3,
    "utf8": "Le cœur a ses raisons. 東京タワー, Привет мир, naïve façade — ∑ λ 🙂\n".encode() * 2,
    "invalid utf8": b"caf\xe9 \xff\xfe ok \xc3 end\x80",
    "crlf": b"line one\r\nline two\r\n\r\nlast",
    "nul bytes": b"a\x00b\x00\x00c" * 20,
    "long repeat": b"abcabcabc" * 80,
    "binary": bytes(np.random.default_rng(3).integers(0, 256, 700, dtype=np.uint8)),
}


@pytest.fixture(scope="module")
def torch_compressor(hf_dir):
    """Small windows and lanes so that short inputs slide and run several lanes in lockstep."""
    with Compressor(model=hf_dir, backend="torch", threads=1, window=48, keep=16, lanes=3, lane_tokens=40,
                    primer=8, route="llm") as c:
        yield c


@pytest.mark.parametrize("name", EDGE_CASES)
def test_round_trip(torch_compressor, name):
    data = EDGE_CASES[name]
    archive = torch_compressor.compress(data)
    header, _ = container.read_header(archive)
    if data:
        assert header.backend == backend_id("cpu", 1)
    assert torch_compressor.decompress(archive) == data


def test_round_trip_in_a_fresh_compressor_with_other_threads(hf_dir, torch_compressor):
    """Decoding takes the backend and the thread count from the archive, whatever it is told."""
    data = EDGE_CASES["utf8"] * 3
    archive = torch_compressor.compress(data)
    with Compressor(model=hf_dir, threads=2) as other:
        assert other.decompress(archive) == data
        assert other.models_loaded == 1
        assert other.model.identity.backend == "torch-cpu-f32-t1"


def test_llama_backend_refuses_a_torch_archive(hf_dir, torch_compressor):
    archive = torch_compressor.compress(b"some text for the model\n")
    with Compressor(model=hf_dir, backend="llama") as other:
        with pytest.raises(ModelMismatchError, match="torch backend .*--backend torch"):
            other.decompress(archive)


@pytest.mark.parametrize("backend", ["llama", "engine"])
def test_torch_backend_refuses_an_archive_of_another_backend(tiny_gguf, backend):
    with Compressor(model=tiny_gguf, threads=1, window=64, route="llm", backend=backend) as c:
        archive = c.compress(b"hello llama\n")
    with Compressor(model=tiny_gguf, backend="torch") as other:
        with pytest.raises(ModelMismatchError, match=f"{backend} backend .*--backend {backend}"):
            other.decompress(archive)


def test_an_archive_of_another_device_is_refused_before_decoding(hf_dir, torch_compressor):
    """A CUDA archive on a machine without CUDA (or decoded with --device cpu) is refused by name."""
    archive = torch_compressor.compress(b"device test\n")
    header, _ = container.read_header(archive)
    parsed = container.read_archive(archive)
    cuda = container.write_archive(dataclasses.replace(parsed, header=dataclasses.replace(header, backend=backend_id("cuda"))))
    with Compressor(model=hf_dir, backend="torch", device="cpu") as other:
        with pytest.raises(ModelMismatchError, match="--device cuda"):
            other.decompress(cuda)
    if not torch.cuda.is_available():
        with Compressor(model=hf_dir) as other:
            with pytest.raises(ModelMismatchError, match="no CUDA GPU"):
                other.decompress(cuda)


@pytest.mark.parametrize("backend", ["llama", "engine"])
def test_only_torch_loads_a_model_directory(hf_dir, backend):
    with Compressor(model=hf_dir, route="llm", backend=backend) as c:
        with pytest.raises(NczipError, match="model directory"):
            c.compress(b"text")
    with Compressor(model=hf_dir, route="llm") as c:  # a directory goes to torch by default
        assert c.decompress(c.compress(b"text")) == b"text"


def test_options_are_checked():
    with pytest.raises(ValueError, match="backend"):
        Compressor(backend="tensorflow")
    with pytest.raises(ValueError, match="device"):
        Compressor(backend="torch", device="tpu")
    with pytest.raises(ValueError, match="torch backend only"):
        Compressor(device="cpu")


def test_directory_identity_covers_every_file_but_hidden_ones(hf_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(hf_dir, copy)
    first = model_from_path(copy).sha256
    assert first == model_from_path(hf_dir).sha256  # content, not location
    (copy / ".cache").mkdir()
    (copy / ".cache" / "junk").write_bytes(b"x")
    assert model_from_path(copy).sha256 == first
    config = copy / "config.json"
    config.write_bytes(config.read_bytes() + b" ")
    assert model_from_path(copy).sha256 != first


def test_another_directory_model_is_refused(hf_dir, tmp_path, torch_compressor):
    archive = torch_compressor.compress(b"which model?\n")
    other_dir = write_tiny_hf_model(tmp_path / "other", seed=1)
    with Compressor(model=other_dir) as other:
        with pytest.raises(ModelMismatchError, match="archive needs model tiny-gemma3"):
            other.decompress(archive)


def test_byte_level_vocabulary_pieces(hf_dir):
    from nczip.models.hf_vocab import HfVocab

    vocab = HfVocab.from_directory(hf_dir, "tiny")
    text = "Alice was beginning — 東京 🙂\n\tend".encode()
    ids = vocab.tokenize(text)
    assert len(ids) < len(text)  # merges are used
    assert b"".join(vocab.piece(t) for t in ids) == text
    assert [vocab.piece(vocab.byte_token(v)) for v in range(256)] == [bytes([v]) for v in range(256)]
    assert vocab.piece(vocab.bos) == b""  # a control token stands for no bytes
