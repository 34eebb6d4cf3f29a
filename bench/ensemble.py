"""The ensemble against the LLM alone, file by file: the table behind docs/ensemble.md.

    python bench/ensemble.py [--limit BYTES] [--files alice29.txt,html,...] [--ablate]
                             [--no-decompress]

For each text file of the benchmark corpora (the first 1 MB of enwik8.head), compresses with the
default ensemble (preset 3), with preset 2 (its n-gram weights starting at 0.25, not 0) and with
--llm-only, decompresses each and compares, and prints the payload's bpb (the coded bits, header
left out, so that the forms' header sizes do not count), the default's gain over the LLM alone,
and the milliseconds per token. --ablate adds runs with one component left out at a time (no
n-grams, no match model, no bias head). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora.locate import find  # noqa: E402
from nczip import container  # noqa: E402
from nczip.api import Compressor  # noqa: E402
from nczip.ensemble import PRESETS, EnsembleParams  # noqa: E402

FILES = ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt", "html", "urls.10K", "enwik8.head"]
LIMITS = {"enwik8.head": 1_000_000}

VARIANTS = {
    "default": EnsembleParams(),
    "preset 2": PRESETS[2],
    "llm-only": None,
}
ABLATIONS = {
    "no n-grams": dataclasses.replace(EnsembleParams(), orders=0),
    "no match": dataclasses.replace(EnsembleParams(), match_min=0),
    "no bias head": dataclasses.replace(EnsembleParams(), bias_rate=0),
}


def run(compressor: Compressor, data: bytes, decompress: bool) -> tuple[int, float, int]:
    t0 = time.perf_counter()
    archive = compressor.compress(data)
    seconds = time.perf_counter() - t0
    tokens = compressor.last_stats.tokens
    if decompress and compressor.decompress(archive) != data:
        raise SystemExit("round trip FAILED")
    payload = sum(len(s.payload) for s in container.read_archive(archive).segments)
    return payload, seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default=",".join(FILES))
    parser.add_argument("--limit", type=int, default=None, help="bytes of each file (default: whole, enwik8.head 1 MB)")
    parser.add_argument("--ablate", action="store_true")
    parser.add_argument("--no-decompress", action="store_true")
    args = parser.parse_args()
    variants = dict(VARIANTS, **(ABLATIONS if args.ablate else {}))
    print("| file | bytes | " + " | ".join(f"{v} payload bpb" for v in variants) + " | gain | ms/token default | ms/token llm-only |")
    print("|---|---:|" + "---:|" * (len(variants) + 3))
    gains = []
    with Compressor(route="llm") as compressor:
        compressor.compress(b"warm up")  # loads the model outside the timings
        for name in args.files.split(","):
            path = find(name)
            if path is None:
                print(f"| {name} | not found |")
                continue
            data = path.read_bytes()[: args.limit or LIMITS.get(name)]
            bpb, ms = {}, {}
            for label, params in variants.items():
                compressor.params = dataclasses.replace(compressor.params, ensemble=params)
                size, seconds, tokens = run(compressor, data, not args.no_decompress)
                bpb[label] = 8 * size / len(data)
                ms[label] = 1000 * seconds / max(tokens, 1)
            gain = 1 - bpb["default"] / bpb["llm-only"]
            gains.append(gain)
            print(
                f"| {name} | {len(data)} | " + " | ".join(f"{bpb[v]:.4f}" for v in variants)
                + f" | {100 * gain:.1f}% | {ms['default']:.2f} | {ms['llm-only']:.2f} |",
                flush=True,
            )
    if gains:
        print(f"\nmean gain {100 * sum(gains) / len(gains):.1f}% over {len(gains)} files")


if __name__ == "__main__":
    main()
