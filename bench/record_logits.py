"""Records the LLM's top-128 logits per token of a file under the default lane schedule, for
bench/ensemble_replay.py, which replays them through the ensemble in seconds instead of hours.

    python bench/record_logits.py FILE LIMIT OUT.npz      (LIMIT 0: the whole file)

The logits come from batched evaluation (one call per 256 positions of a lane), not from the
codec's lockstep calls, so they differ from the coded ones in the last bits; the ideal code
length it prints matches the codec's to ~0.01 bpb. ~60 tokens/s on 2 cores.
"""
import sys, math, time
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from nczip import tokens as tk
from nczip.codec import CodecParams, lane_plan, lane_bounds
from nczip.models.llama_cpp import LlamaCppModel
from nczip.models.registry import resolve_model

K = 128
path, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = open(path, "rb").read()
if limit: data = data[:limit]
m = LlamaCppModel(resolve_model(None), n_ctx=4096, threads=2)
lib = m._lib
ids = tk.tokenize_exact(data, m)
T = len(ids)
p = CodecParams()
primer, lanes = lane_plan(T, p)
bounds = lane_bounds(T, primer, lanes)
V = m.n_vocab
top_ids = np.zeros((T, K), np.int32); top_l = np.zeros((T, K), np.float32)
lse_a = np.zeros(T, np.float64); tok_l = np.zeros(T, np.float32)
B = 256
batch = lib.llama_batch_init(B, 0, 1)

def run_seq(seq, targets):
    """seq: context tokens starting with BOS; targets: dict row->doc index of token predicted by row."""
    m.reset()
    for start in range(0, len(seq), B):
        part = seq[start:start + B]
        rows = []
        for j, t in enumerate(part):
            r = start + j
            batch.token[j] = t; batch.pos[j] = r; batch.n_seq_id[j] = 1; batch.seq_id[j][0] = 0
            batch.logits[j] = 1 if r in targets else 0
            if r in targets: rows.append(j)
        batch.n_tokens = len(part)
        assert lib.llama_decode(m._ctx, batch) == 0
        if not rows: continue
        L = np.stack([np.ctypeslib.as_array(lib.llama_get_logits_ith(m._ctx, j), shape=(V,)) for j in rows]).astype(np.float32)
        mx = L.max(axis=1, keepdims=True)
        lse = (mx[:, 0].astype(np.float64) + np.log(np.exp((L - mx).astype(np.float64)).sum(axis=1)))
        idx = np.argpartition(-L, K, axis=1)[:, :K]
        for q, j in enumerate(rows):
            d = targets[start + j]
            top_ids[d] = idx[q]; top_l[d] = L[q, idx[q]]; lse_a[d] = lse[q]; tok_l[d] = L[q, ids[d]]

def run_lane(prefix, lo, hi):
    """prefix: doc tokens in context before lo (no targets). emulate window slides."""
    W, keep = p.window, p.keep
    ctx = list(prefix)
    pos = lo
    while pos < hi:
        room = W - 1 - len(ctx)  # rows available: seq = [BOS]+ctx+new, row r predicts next
        n = min(room, hi - pos)
        # row predicting doc[pos+i] is the row of the token before it
        seq = [m.bos] + ctx + ids[pos:pos + n - 1] if True else None
        targets = {len(ctx) + i: pos + i for i in range(n)}  # row len(ctx)+i has BOS offset: row0=BOS predicts ctx[0]
        run_seq(seq, targets)
        allc = ctx + ids[pos:pos + n]
        pos += n
        ctx = allc[-keep:]

t0 = time.time()
if primer:
    run_lane([], 0, primer)
    for j in range(lanes):
        run_lane(ids[:primer], bounds[j], bounds[j + 1])
else:
    run_lane([], 0, T)
np.savez(out, ids=np.array(ids, np.int32), top_ids=top_ids, top_l=top_l, lse=lse_a, tok_l=tok_l,
         bounds=np.array(bounds), primer=primer, lanes=lanes, nbytes=len(data))
bits = (lse_a - tok_l).sum() / math.log(2)
print(f"{path}: {T} tokens {len(data)} B primer {primer} lanes {lanes}: ideal {bits/len(data):.4f} bpb, {time.time()-t0:.0f}s", flush=True)
