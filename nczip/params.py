"""The numbers that shape an LLM segment's coding, and what coding measures.

Apart from the codec (codec.py) so that the command line and the binary route import them
without numpy or the model: `nczip` on a binary file starts in a few tens of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ensemble import EnsembleParams


@dataclass(frozen=True)
class CodecParams:
    """Every number that changes the coded bits; all of them go into the archive header."""

    window: int = 4096  # tokens in each lane's context, BOS included: chosen by bench/window_sizes.py
    keep: int = 3072  # tokens kept when a lane's window slides
    # How a full window slides: SLIDE_SHIFT drops the oldest tokens after BOS from the cache and
    # moves the rest down (keys re-rotated, nothing recomputed); SLIDE_RESTART clears the lane and
    # evaluates BOS + the last `keep` tokens again. Shifting with keep = 3/4 window coded enwik8's
    # first 100 KB 0.03% smaller and 14% faster than restarting with keep = 1/2 (README "Speed").
    slide: int = 1
    cdf_bits: int = 31  # the integer CDF sums to 2**cdf_bits
    # A 2-byte checkpoint of the logits at step 0 and every check_every steps (a step codes one
    # token in each lane): 16 bits per >= 4096 tokens at ~3.5 bits is <= 0.11% of the archive.
    check_every: int = 4096
    # Lockstep lanes (bench/lanes.py; README "Speed"): 16 lanes of >= 2048 tokens after a 512-token
    # primer cost alice29 2.1% more bits than one lane, in return for ~2x the speed.
    lanes: int = 16  # the most lanes a segment is split into, coded in lockstep
    lane_tokens: int = 2048  # the fewest tokens a lane gets: shorter segments get fewer lanes
    primer: int = 512  # tokens lane 0 codes alone first, the shared start of every lane's context
    # The cheap models and the mixer beside the LLM; None codes with the LLM alone (--llm-only).
    ensemble: EnsembleParams | None = field(default_factory=EnsembleParams)

    def __post_init__(self):
        if not 2 <= self.window <= 1 << 17:
            raise ValueError(f"window must be in 2..131072 tokens, got {self.window}")
        if not 1 <= self.keep <= self.window - 2:
            raise ValueError(f"keep must be in 1..{self.window - 2} (window - 2), got {self.keep}")
        if self.slide not in (SLIDE_RESTART, SLIDE_SHIFT):
            raise ValueError(f"slide must be {SLIDE_RESTART} (restart) or {SLIDE_SHIFT} (shift), got {self.slide!r}")
        if not 20 <= self.cdf_bits <= 31:
            raise ValueError(f"cdf_bits must be in 20..31, got {self.cdf_bits}")
        if not 1 <= self.check_every <= 1 << 30:
            raise ValueError(f"check_every must be in 1..{1 << 30} steps, got {self.check_every}")
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must be in 1..{MAX_LANES}, got {self.lanes}")
        if not 1 <= self.lane_tokens <= 1 << 30:
            raise ValueError(f"lane_tokens must be in 1..{1 << 30}, got {self.lane_tokens}")
        if not 0 <= self.primer <= 1 << 30:
            raise ValueError(f"primer must be in 0..{1 << 30}, got {self.primer}")



# CodecParams.slide: how a full window slides.
SLIDE_RESTART = 0  # clear the lane, evaluate BOS + the last keep tokens (every archive before slide existed)
SLIDE_SHIFT = 1  # drop the oldest tokens after BOS from the cache, move the rest down
SLIDES = {"restart": SLIDE_RESTART, "shift": SLIDE_SHIFT}


# Rows per evaluation call stay within llama.cpp's batch (512) and its sequence limit (256).
MAX_LANES = 256


@dataclass
class CodingStats:
    """Measured while coding; never influences the bits."""

    tokens: int = 0
    ideal_bits: float = 0.0  # -sum log2 p under the float distribution (only when measured)
    seconds: float = 0.0
    measure_ideal: bool = False

