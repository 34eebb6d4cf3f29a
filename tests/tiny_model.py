"""A tiny random-weight Gemma-3 GGUF for tests.

``write_tiny_gguf(path, seed=...)`` writes, in a few milliseconds, a ~200 KB GGUF that llama.cpp
loads as architecture ``gemma3`` and runs through exactly the code path the real default model
(Gemma-3-270M) takes: SentencePiece ("llama") tokenizer with byte fallback, the interleaved
sliding-window / global attention KV cache, QK-norm, tied output embedding.  The weights are
random (``numpy.random.RandomState(seed)``), so the predictions are meaningless but finite and
non-degenerate; a different seed gives a different file (the project identifies models by the
file's SHA-256, so two seeds act as "two different models").

Layout, mirroring the real file (``gemma-3-270m-q4_k_m.gguf``):

* metadata: the same ``gemma3.*`` and ``tokenizer.ggml.*`` keys as the real file, plus
  ``gemma3.attention.sliding_window_pattern = 2`` so that with only two blocks, layer 0 uses
  sliding-window attention and layer 1 global attention (llama.cpp's default pattern for gemma3
  is 6, which with two blocks would make every layer a SWA layer) and
  ``gemma3.rope.freq_base_swa`` (llama.cpp's default, written explicitly);
* vocabulary (``TINY_VOCAB``): ``<pad>=0, <eos>=1, <bos>=2, <unk>=3, <mask>=4`` (CONTROL), a
  ``[multimodal]`` USER_DEFINED token, a few ``<unusedN>``, ``<start_of_turn>``,
  ``<end_of_turn>`` (CONTROL), ``"\\n"``, ``"\\n\\n"``, ``"\\n\\n\\n"`` (USER_DEFINED, as in
  Gemma), the 256 byte tokens ``<0x00>``..``<0xFF>`` (BYTE), then NORMAL pieces: multi-character
  pieces (common English words with the SentencePiece space ``"▁"`` and frequent fragments, each
  together with all of its prefixes so the SPM bigram merges can reach it) with decreasing
  scores, then every printable ASCII character (space as ``"▁"``) and ``"\\t"``.  Text outside the
  vocabulary (e.g. ``"é"``) falls back to byte tokens, like the real model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "TINY_HPARAMS",
    "TINY_VOCAB",
    "TINY_N_VOCAB",
    "BYTE_TOKEN_OFFSET",
    "PAD_ID",
    "EOS_ID",
    "BOS_ID",
    "UNK_ID",
    "write_tiny_gguf",
]

# SentencePiece token types (same values as gguf.TokenType / llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3

TINY_HPARAMS = {
    "context_length": 4096,
    "embedding_length": 64,
    "block_count": 2,
    "feed_forward_length": 128,
    "head_count": 2,
    "head_count_kv": 1,
    "head_dim": 32,  # attention.key_length == attention.value_length
    "rms_eps": 1e-6,
    "rope_freq_base": 1_000_000.0,
    "rope_freq_base_swa": 10_000.0,
    "sliding_window": 32,
    "sliding_window_pattern": 2,  # layer 0: SWA, layer 1: global
}

_SPM_SPACE = "\u2581"  # "▁"

# Multi-character NORMAL pieces, most "frequent" first (higher SentencePiece score).
_WORDS = [
    "▁the", "▁and", "▁of", "▁to", "▁a", "▁in", "▁is", "▁that", "▁it", "▁for", "▁was", "▁on",
    "▁with", "▁as", "▁be", "▁this", "▁are", "▁or", "▁by", "▁an", "▁not", "▁from", "▁at", "▁we",
    "▁you", "▁he", "▁she", "▁they", "▁have", "▁has", "▁had", "▁his", "▁her", "▁but", "▁can",
    "▁will", "▁one", "▁all", "▁which", "▁their", "▁there", "▁were", "▁been", "▁would", "▁more",
    "▁when", "▁what", "▁if", "▁so", "▁no", "▁do", "▁The", "▁In", "▁It", "▁This", "▁I",
    "ing", "er", "th", "he", "in", "an", "re", "on", "at", "en", "ed", "nd", "es", "or", "ti",
    "te", "st", "ar", "al", "le", "is", "ion", "tion", "ation", "ent", "ly", "ou", "ll", "ve",
    "ng", "ic", "ro", "ch", "it", "as", "co", "de", "me", "se", "ne", "ri", "ra", "ce", "ea",
    "la", "li", "ma", "si", "ur", "us", "ers", "ment", "ness", "ity", "ous", "ive", "able",
    "ions", "ally", "▁s", "▁c", "▁p", "▁m", "▁w", "▁d", "▁b", "▁f", "▁h", "▁l", "▁o", "▁r",
    "▁e", "▁g", "▁n", "▁u", "▁v", "▁y", "▁k", "▁j", "▁T", "▁S", "▁A", "▁(", "▁\"", "▁▁",
    "▁▁▁▁", ".▁", ",▁",
]


def _build_vocab() -> list[tuple[str, float, int]]:
    """(piece, score, token_type) for every token id, in id order."""
    vocab: list[tuple[str, float, int]] = []
    for piece in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"):
        vocab.append((piece, -1000.0, _CONTROL))
    vocab.append(("[multimodal]", -1000.0, _USER_DEFINED))
    for i in range(4):
        vocab.append((f"<unused{i}>", -1000.0, _CONTROL))
    vocab.append(("<start_of_turn>", -1000.0, _CONTROL))
    vocab.append(("<end_of_turn>", -1000.0, _CONTROL))
    for piece in ("\n", "\n\n", "\n\n\n"):
        vocab.append((piece, -1000.0, _USER_DEFINED))
    assert len(vocab) == BYTE_TOKEN_OFFSET
    for b in range(256):
        vocab.append((f"<0x{b:02X}>", 0.0, _BYTE))

    normal: list[str] = []
    seen: set[str] = set()
    for word in _WORDS:
        for n in range(2, len(word) + 1):  # every prefix, so the SPM merges can reach the word
            prefix = word[:n]
            if prefix not in seen:
                seen.add(prefix)
                normal.append(prefix)
    singles = [_SPM_SPACE if c == " " else c for c in map(chr, range(0x20, 0x7F))] + ["\t"]
    for c in singles:
        assert c not in seen
        seen.add(c)
        normal.append(c)
    for rank, piece in enumerate(normal):
        vocab.append((piece, -float(rank), _NORMAL))
    return vocab


BYTE_TOKEN_OFFSET = 15  # id of <0x00>; <0xNN> is BYTE_TOKEN_OFFSET + NN
TINY_VOCAB: list[tuple[str, float, int]] = _build_vocab()
TINY_N_VOCAB = len(TINY_VOCAB)


def _tensors(rng: np.random.RandomState, n_vocab: int) -> dict[str, np.ndarray]:
    """All gemma3 tensors, as numpy arrays in row-major (numpy) order, i.e. shapes reversed
    with respect to the GGUF/ggml ``ne`` order llama.cpp prints."""
    hp = TINY_HPARAMS
    d = hp["embedding_length"]
    ff = hp["feed_forward_length"]
    hd = hp["head_dim"]
    nq = hp["head_count"] * hd
    nkv = hp["head_count_kv"] * hd

    def mat(rows: int, cols: int, scale: float) -> np.ndarray:
        # (rows, cols) numpy == ggml ne [cols, rows]: cols is the input (fan-in) dimension.
        return (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        # Gemma GGUFs store RMS-norm weights with the "+1" already folded in, so ~1.
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    t: dict[str, np.ndarray] = {}
    # Tied output: logits = output_norm(h) @ E^T; std(E) = 0.3 gives logits of std ~2.4.
    t["token_embd.weight"] = (0.3 * rng.standard_normal((n_vocab, d))).astype(np.float32)
    t["output_norm.weight"] = norm(d)
    for i in range(hp["block_count"]):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = norm(d)
        t[p + "attn_q.weight"] = mat(nq, d, 1.0)
        t[p + "attn_k.weight"] = mat(nkv, d, 1.0)
        t[p + "attn_v.weight"] = mat(nkv, d, 1.0)
        t[p + "attn_q_norm.weight"] = norm(hd)
        t[p + "attn_k_norm.weight"] = norm(hd)
        t[p + "attn_output.weight"] = mat(d, nq, 1.0)
        t[p + "post_attention_norm.weight"] = norm(d)
        t[p + "ffn_norm.weight"] = norm(d)
        t[p + "ffn_gate.weight"] = mat(ff, d, 1.0)
        t[p + "ffn_up.weight"] = mat(ff, d, 1.0)
        t[p + "ffn_down.weight"] = mat(d, ff, 1.0)
        t[p + "post_ffw_norm.weight"] = norm(d)
    return t


def write_tiny_gguf(path: str | os.PathLike[str], *, seed: int = 0, arch: str = "gemma3", q8_head: bool = False) -> Path:
    """Write a tiny random-weight model to ``path`` and return it as a ``Path``.

    The output is a pure function of ``seed``: the same seed gives a byte-identical file,
    different seeds give different weights (and a different ``general.name``). ``q8_head``
    stores the (tied) output matrix as Q8_0, as Gemma-3-270M's is, so nczip's own head applies.
    """
    import gguf  # test-only dependency

    if arch != "gemma3":
        raise ValueError(f"only arch='gemma3' is supported, not {arch!r}")
    path = Path(path)
    hp = TINY_HPARAMS
    rng = np.random.RandomState(seed)
    tensors = _tensors(rng, TINY_N_VOCAB)

    w = gguf.GGUFWriter(str(path), arch)  # writes general.architecture
    w.add_type("model")
    w.add_name(f"nczip tiny random gemma3 (seed {seed})")
    w.add_basename("nczip-tiny-gemma3")
    w.add_size_label("tiny")
    w.add_license("mit")

    w.add_context_length(hp["context_length"])
    w.add_embedding_length(hp["embedding_length"])
    w.add_block_count(hp["block_count"])
    w.add_feed_forward_length(hp["feed_forward_length"])
    w.add_head_count(hp["head_count"])
    w.add_layer_norm_rms_eps(hp["rms_eps"])
    w.add_key_length(hp["head_dim"])
    w.add_value_length(hp["head_dim"])
    w.add_rope_freq_base(hp["rope_freq_base"])
    w.add_rope_freq_base_swa(hp["rope_freq_base_swa"])
    w.add_sliding_window(hp["sliding_window"])
    w.add_sliding_window_pattern(hp["sliding_window_pattern"])
    w.add_head_count_kv(hp["head_count_kv"])

    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([piece for piece, _, _ in TINY_VOCAB])
    w.add_token_scores([score for _, score, _ in TINY_VOCAB])
    w.add_token_types([tt for _, _, tt in TINY_VOCAB])
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_pad_token_id(PAD_ID)
    w.add_add_bos_token(True)
    w.add_add_sep_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    for name, arr in tensors.items():
        if q8_head and name == "token_embd.weight":
            quantized = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, quantized, raw_shape=quantized.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
