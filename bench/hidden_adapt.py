"""Issue 4's question: does a per-document linear map of Gemma's final hidden state, learned
online, pay? h' = h + A h + c (A: n_embd x n_embd, c: n_embd), by SGD on the coding loss in
blocks of 16 tokens (one lockstep step), logits = W h' with nczip's own head matrix W.

    python bench/hidden_adapt.py record FILE LIMIT OUT.npz   (LIMIT 0: the whole file)
    python bench/hidden_adapt.py replay OUT.npz LR [MODE] [TOKENS]   (MODE: A, c or Ac)

`record` stores the final hidden states (result_norm, through nczip's capture callback) of
each token, one lane, in 2,048-token windows that start with BOS and predict 1,024 tokens with
at least 1,023 tokens of context (~2.5 min for alice29 on 2 cores), and the dequantized Q8_0
head next to OUT (OUT.W.npy, 671 MB for Gemma-3-270M). `replay` prints the bpb of the plain
head and of the adapted one over the first TOKENS tokens (exact float32 gradient: a full pass
over W per block, ~12 s per 1,000 tokens here).

Measured 2026-11-30, alice29's first 12,800 tokens: lr 1e-5 -0.28%, 3e-5 -0.46%, 1e-4 -0.68%
(1.0660 -> 1.0588 bpb), 1e-3 worse than none; c alone at 1e-3 -0.01%. Not built into nczip.
"""
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WINDOW, STRIDE, BLOCK = 2048, 1024, 16


def record(path: str, limit: int, out: str) -> None:
    from nczip import tokens as tk
    from nczip.models.head import output_tensor
    from nczip.models.llama_cpp import LlamaCppModel
    from nczip.models.registry import resolve_model

    data = Path(path).read_bytes()
    data = data[:limit] if limit else data
    model_file = resolve_model(None)
    m = LlamaCppModel(model_file, n_ctx=WINDOW + 8, threads=2)
    m.use_backend_id(m.default_backend_id)
    if not m._own_head:
        raise SystemExit("this model has no nczip head (its output matrix is not Q8_0)")
    ids = tk.tokenize_exact(data, m)
    hidden = np.zeros((len(ids), m._head.n_embd), np.float32)
    batch = m._batch
    for a in range(0, len(ids), STRIDE):
        b = min(len(ids), a + STRIDE)
        first = max(0, a - (WINDOW - STRIDE - 1))
        seq = [m.bos] + ids[first : b - 1]  # row r predicts ids[first + r]
        m.reset()
        rows = []
        for off in range(0, len(seq), m.n_batch):
            chunk = seq[off : off + m.n_batch]
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, off + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = int(off + i >= a - first)
            batch.n_tokens = len(chunk)
            m._decode("record")
            n = sum(batch.logits[i] for i in range(len(chunk)))
            if n:
                rows.append(m._hidden[:n].copy())
        hidden[a:b] = np.concatenate(rows)
    piece_bytes = np.array([len(m.vocab.piece(t)) for t in ids])
    np.savez(out, H=hidden, ids=np.array(ids, np.int32), tokbytes=piece_bytes)
    t = output_tensor(model_file.path)
    nb = t.n_embd // 32
    raw = np.fromfile(model_file.path, np.uint8, t.n_vocab * nb * 34, offset=t.offset).reshape(t.n_vocab, nb, 34)
    scale = raw[:, :, :2].copy().view(np.float16).astype(np.float32)
    np.save(out + ".W.npy", (raw[:, :, 2:].view(np.int8).astype(np.float32) * scale).reshape(t.n_vocab, t.n_embd))
    print(f"{len(ids)} tokens, {len(data)} bytes")


def replay(npz: str, lr: float, mode: str = "Ac", tokens: int = 0) -> None:
    d = np.load(npz)
    limit = tokens or None
    H, ids = d["H"][:limit], d["ids"][:limit]
    nbytes = int(d["tokbytes"][:limit].sum())
    W = np.ascontiguousarray(np.load(npz + ".W.npy"))
    E = H.shape[1]
    A, c = np.zeros((E, E), np.float32), np.zeros(E, np.float32)
    plain = adapted = 0.0  # nats
    started = time.time()
    for s in range(0, len(ids), BLOCK):
        h, y = H[s : s + BLOCK], ids[s : s + BLOCK]
        n = len(y)
        z = np.concatenate([h, h + h @ A.T + c]) @ W.T
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        total = p.sum(axis=1)
        logp = z[np.arange(2 * n), np.concatenate([y, y])] - np.log(total)
        plain -= logp[:n].sum()
        adapted -= logp[n:].sum()
        grad = p[n:] / total[n:, None]
        grad[np.arange(n), y] -= 1.0
        dh = grad @ W  # d loss / d h', n x E
        if "A" in mode:
            A -= lr * (dh.T @ h) / n
        if "c" in mode:
            c -= lr * dh.sum(0) / n
    bits = 1 / np.log(2) / nbytes
    print(f"lr {lr} mode {mode}, {len(ids)} tokens ({time.time() - started:.0f} s): "
          f"plain {plain * bits:.4f} bpb, adapted {adapted * bits:.4f} ({(adapted / plain - 1) * 100:+.2f}%)")


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "record":
        record(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 4 and sys.argv[1] == "replay":
        replay(sys.argv[2], float(sys.argv[3]), *(sys.argv[4:5] or ["Ac"]), *map(int, sys.argv[5:6]))
    else:
        raise SystemExit(__doc__)
