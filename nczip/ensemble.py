"""The ensemble's parameters, and the C object that runs it for one segment (cext/ensemble.c).

Token n-gram models, a match model and a bias head run beside the LLM; a mixer learned online
combines them in log space. Every number here changes the coded bits, so all of them go into the
archive header: as one `ensemble` parameter naming a preset (the defaults are preset 2; 12 bytes
where the full list would take ~120, which is 5% of a 20 KB file's archive), or, for settings
that are no preset, as the full list of `ens_*` parameters. An archive with neither was coded by
the LLM alone.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Mapping

from . import _cext

HEADER_PREFIX = "ens_"
PRESET_KEY = "ensemble"
Q16 = 65536


@dataclass(frozen=True)
class EnsembleParams:
    """Defaults chosen with bench/ensemble.py (docs/ensemble.md)."""

    orders: int = 4  # token n-gram orders 1..orders (0..6)
    match_min: int = 4  # tokens of context a match needs (2..32; 0: no match model)
    mix_rate: int = 120  # mixer learning rate, Q16 per 1/256 bit of gradient
    bias_rate: int = 8000  # bias head learning rate, 1/65536 bit (0: no bias head, no LLM weight)
    w_ngram: int = 0  # initial mixer weights, Q16 (the LLM's is fixed at 1)
    w_match: int = 65536
    # The n-gram tables grow with the segment up to 2^max_table_bits buckets per order (44 bytes
    # each; the match table gets 4x the entries at 4 bytes). 18: at most 46 MiB for 4 orders,
    # reached by segments over ~131k tokens (preset 1 allowed 2^20, ~190 MiB at a 1 MiB segment).
    max_table_bits: int = 18

    def __post_init__(self):
        checks = {
            "orders": (0, 6),
            "match_min": (0, 32),
            "mix_rate": (0, Q16),
            "bias_rate": (0, 1 << 20),
            "w_ngram": (0, 4 * Q16),
            "w_match": (0, 4 * Q16),
            "max_table_bits": (10, 20),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"ensemble {name} must be an integer in {lo}..{hi}, got {value!r}")
        if self.match_min == 1:
            raise ValueError("ensemble match_min must be 0 (off) or 2..32, got 1")

    def header_items(self) -> dict[str, int]:
        for number, preset in PRESETS.items():
            if preset == self:
                return {PRESET_KEY: number}
        return {HEADER_PREFIX + k: v for k, v in asdict(self).items()}

    @classmethod
    def header_keys(cls) -> frozenset[str]:
        """The keys of the full form."""
        return frozenset(HEADER_PREFIX + f.name for f in fields(cls))

    @classmethod
    def from_header(cls, params: Mapping[str, int]) -> "EnsembleParams":
        """The settings a header names (KeyError if it names none; ValueError if they are
        unknown or out of range)."""
        if PRESET_KEY in params:
            number = params[PRESET_KEY]
            if number not in PRESETS:
                raise ValueError(f"ensemble preset {number} is unknown (this nczip knows {sorted(PRESETS)})")
            return PRESETS[number]
        values = {f.name: params[HEADER_PREFIX + f.name] for f in fields(cls) if f.name not in LEGACY_DEFAULTS}
        for name, value in LEGACY_DEFAULTS.items():  # written before the key existed: its old rule
            values[name] = params.get(HEADER_PREFIX + name, value)
        return cls(**values)

    @classmethod
    def legacy_header_keys(cls) -> frozenset[str]:
        """The full form as nczip wrote it before the keys of LEGACY_DEFAULTS existed."""
        return cls.header_keys() - {HEADER_PREFIX + name for name in LEGACY_DEFAULTS}


# Fields added after archives were written without them, and the value those archives imply.
LEGACY_DEFAULTS = {"max_table_bits": 20}

# Presets are never changed once released: an archive names one by number.
PRESETS = {
    1: EnsembleParams(max_table_bits=20, w_ngram=16384, w_match=65536),
    2: EnsembleParams(w_ngram=16384, w_match=65536),  # tables capped at 2^18 buckets per order
    # The n-gram weights start at 0, where the LLM alone is, and move only as the coding loss says
    # it pays: preset 2's 0.25 cost 0.4% on alice29's first 10 KB (1.0448 bpb against 1.0408;
    # the LLM alone 1.0416). The match model keeps weight 1: its confidence map starts as the
    # identity, and at 0 a repeated block cost 0.23 bits a token the second time, not 0.05.
    3: EnsembleParams(w_ngram=0),
}


def table_bits(tokens: int, max_bits: int = 20) -> tuple[int, int]:
    """log2 sizes of the n-gram and match hash tables for a segment of `tokens` tokens: about
    twice the tokens (few collisions), within 2^10..2^max_bits buckets (the match table's cap is
    two bits higher)."""
    bits = max(10, (2 * max(tokens, 1) - 1).bit_length())
    return min(bits, max_bits), min(bits, max_bits + 2)


def new_ensemble(params: EnsembleParams, vocab: int, lanes: int, tokens: int, threads: int = 1) -> _cext.Ensemble:
    """threads > 1 splits the vocabulary passes with a helper thread: the same integers, since
    they are sums and elementwise operations (cext/team.c)."""
    ngram_bits, match_bits = table_bits(tokens, params.max_table_bits)
    return _cext.Ensemble(
        vocab,
        lanes,
        tokens,
        orders=params.orders,
        ngram_bits=ngram_bits,
        match_min=params.match_min,
        match_bits=match_bits,
        mix_rate=params.mix_rate,
        bias_rate=params.bias_rate,
        w_ngram=params.w_ngram,
        w_match=params.w_match,
        threads=threads,
    )
