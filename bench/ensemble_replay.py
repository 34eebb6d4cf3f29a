"""Replays recorded logits (bench/record_logits.py) through the ensemble, in the codec's order
(primer on lane 0, fan-out, lanes in lockstep), and prints its bits per byte against the LLM's.

    python bench/ensemble_replay.py REC.npz [limit=TOKENS] [orders=4] [bias_rate=0] ...

Any Ensemble parameter can be set as key=value. Tokens outside the recorded top 128 share the
rest of the probability mass evenly, so the numbers are close to, not equal to, the codec's.
"""
import dataclasses, sys, math, time
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from nczip import _cext  # noqa: E402
from nczip.ensemble import EnsembleParams, table_bits  # noqa: E402

V = 262144  # Gemma-3's vocabulary
P = 31
DEFAULT = dataclasses.asdict(EnsembleParams())

def load(path):
    r = np.load(path)
    return {k: r[k] for k in r.files}

def run(rec, limit=None, **kw):
    prm = dict(DEFAULT); prm.update(kw)
    ids = rec["ids"]; T = len(ids) if limit is None else min(limit, len(ids))
    bounds = list(rec["bounds"]); primer = int(rec["primer"]); lanes = int(rec["lanes"])
    ngram_bits, match_bits = table_bits(len(ids))
    ens = _cext.Ensemble(V, lanes, len(ids), ngram_bits=ngram_bits, match_bits=match_bits, **prm)
    K = rec["top_ids"].shape[1]
    order = []
    if primer:
        order += [(0, i) for i in range(primer)]
        order.append(None)
        for s in range(max(bounds[j + 1] - bounds[j] for j in range(lanes))):
            for j in range(lanes):
                if bounds[j] + s < bounds[j + 1]:
                    order.append((j, bounds[j] + s))
    else:
        order = [(0, i) for i in range(len(ids))]
    bits = llm = 0.0
    nb = 0
    logits = np.empty(V, np.float32)
    for item in order:
        if item is None:
            ens.fan_out(); continue
        lane, pos = item
        if limit is not None and pos >= limit: continue
        lse = rec["lse"][pos]; tl = rec["tok_l"][pos]; ti = rec["top_ids"][pos]; tv = rec["top_l"][pos]
        y = int(ids[pos])
        mass = np.exp(tv.astype(np.float64) - lse).sum()
        rest = 1.0 - mass; nrest = V - K
        if y not in ti:
            rest -= math.exp(tl - lse); nrest -= 1
        c = lse + math.log(max(rest, 1e-30) / nrest)
        logits.fill(c)
        logits[ti] = tv
        logits[y] = tl
        f = ens.measure(lane, pos, logits, y, P)
        bits += P - math.log2(f)
        llm += (lse - tl) / math.log(2)
        nb += 1
    return bits, llm, nb

if __name__ == "__main__":
    rec = load(sys.argv[1])
    kw = {}
    limit = None
    for a in sys.argv[2:]:
        k, v = a.split("=")
        if k == "limit": limit = int(v)
        else: kw[k] = int(v)
    t0 = time.time()
    bits, llm, nb = run(rec, limit, **kw)
    nbytes = int(rec["nbytes"]) if limit is None else None
    denom = nbytes or nb * 3.4
    print(f"{kw}: ens {bits/denom:.4f} llm {llm/denom:.4f} bpb ratio {bits/llm:.4f} ({nb} tok, {time.time()-t0:.0f}s)", flush=True)
