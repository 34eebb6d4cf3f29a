"""The numbers that shape an LLM segment's coding, and what coding measures.

Apart from the codec (codec.py) so that the command line and the binary route import them
without numpy or the model: `nczip` on a binary file starts in a few tens of milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .ensemble import HEADER_PREFIX as ENSEMBLE_PREFIX, PRESET_KEY as ENSEMBLE_PRESET_KEY, PRESETS as ENSEMBLE_PRESETS, EnsembleParams


# Tokens a lane's window may hold, BOS included.
WINDOW_RANGE = (2, 1 << 17)


@dataclass(frozen=True)
class CodecParams:
    """Every number that changes the coded bits; all of them go into the archive header."""

    window: int = 4096  # tokens in each lane's context, BOS included: chosen by bench/window_sizes.py
    keep: int = 3072  # tokens kept when a lane's window slides
    # How a full window slides: SLIDE_SHIFT drops the oldest tokens after BOS from the cache and
    # moves the rest down (keys re-rotated, nothing recomputed); SLIDE_RESTART clears the lane and
    # evaluates BOS + the last `keep` tokens again. Shifting with keep = 3/4 window codes about as
    # small as restarting and recomputes nothing (bench/slides.py).
    slide: int = 1
    cdf_bits: int = 31  # the integer CDF sums to 2**cdf_bits
    # A 2-byte checkpoint of the logits at step 0 and every check_every steps (a step codes one
    # token in each lane): 16 bits per >= 4096 tokens at ~3.5 bits is <= 0.11% of the archive.
    # 0: none, for backends whose floats are the same on every machine (nczip's engine), where
    # the original's checksum, checked before any output, is enough.
    check_every: int = 4096
    # Lockstep lanes: each lane sees less context than one lane through the whole text, so more
    # lanes cost bits and save time; the levels below trade the two (bench/levels.py, whose table
    # is in docs/performance.md).
    lanes: int = 16  # the most lanes a segment is split into, coded in lockstep
    lane_tokens: int = 2048  # the fewest tokens a lane gets: shorter segments get fewer lanes
    primer: int = 512  # tokens lane 0 codes alone first, the shared start of every lane's context
    # The cheap models and the mixer beside the LLM; None codes with the LLM alone (--llm-only).
    ensemble: EnsembleParams | None = field(default_factory=EnsembleParams)

    def __post_init__(self):
        if not WINDOW_RANGE[0] <= self.window <= WINDOW_RANGE[1]:
            raise ValueError(f"window must be in {WINDOW_RANGE[0]}..{WINDOW_RANGE[1]} tokens, got {self.window}")
        if not 1 <= self.keep <= self.window - 2:
            raise ValueError(f"keep must be in 1..{self.window - 2} (window - 2), got {self.keep}")
        if self.slide not in (SLIDE_RESTART, SLIDE_SHIFT):
            raise ValueError(f"slide must be {SLIDE_RESTART} (restart) or {SLIDE_SHIFT} (shift), got {self.slide!r}")
        if not 20 <= self.cdf_bits <= 31:
            raise ValueError(f"cdf_bits must be in 20..31, got {self.cdf_bits}")
        if not 0 <= self.check_every <= 1 << 30:
            raise ValueError(f"check_every must be in 0..{1 << 30} steps (0: no checkpoints), got {self.check_every}")
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
# Tokens per llama.cpp or torch evaluation call when a slide prefills a lane: it shapes their
# floats, so it is a header parameter (no effect on nczip's engine, whose rows are independent).
N_BATCH = 512


# ---- levels and presets: the settings as the archive header writes them -------------------

# An archive names its coding settings as one number where it can: `codec` = a preset (the
# LLM_SINGLE and general forms: 7 bytes where the keys take ~90; the COMPACT form: 4 bits).
# Presets never change once released.
CODEC_PRESET_KEY = "codec"
# Header keys this version writes and understands besides the ensemble's; any other set is
# refused, because an unknown parameter may change the bits in a way this decoder cannot repeat.
PARAM_KEYS = frozenset({"cdf_bits", "check_every", "keep", "lane_tokens", "lanes", "n_batch", "n_vocab", "primer", "window"})
# Written only when not SLIDE_RESTART: archives from before it existed restarted their windows.
SLIDE_KEY = "slide"


@dataclass(frozen=True)
class Level:
    """What a compression level (-1 fastest .. -9 smallest) sets: the rest is the same for all."""

    window: int
    lanes: int
    lane_tokens: int
    primer: int
    ensemble: int | None  # an ensemble preset (ensemble.PRESETS), None for the LLM alone


# Decoding steps one row per lane, so fewer lanes cost time; each lane sees less context than
# one lane through the whole text, so more lanes cost bits. On 2 cores decoding gains little
# beyond 32 lanes (the per-token work over the 262,144-token vocabulary stays), and the ensemble
# costs less time than it saves bits at every level (docs/performance.md, "Levels").
LEVELS = {
    1: Level(window=512, lanes=64, lane_tokens=128, primer=128, ensemble=3),
    2: Level(window=1024, lanes=64, lane_tokens=256, primer=256, ensemble=3),
    3: Level(window=2048, lanes=32, lane_tokens=512, primer=256, ensemble=3),
    4: Level(window=2048, lanes=24, lane_tokens=1024, primer=512, ensemble=3),
    5: Level(window=4096, lanes=20, lane_tokens=1024, primer=512, ensemble=3),
    6: Level(window=4096, lanes=16, lane_tokens=2048, primer=512, ensemble=3),
    7: Level(window=4096, lanes=8, lane_tokens=4096, primer=512, ensemble=3),
    8: Level(window=8192, lanes=4, lane_tokens=8192, primer=1024, ensemble=3),
    9: Level(window=8192, lanes=1, lane_tokens=8192, primer=1024, ensemble=3),
}
DEFAULT_LEVEL = 6
# Level L is codec preset LEVEL_PRESET_BASE + L: the COMPACT form's preset nibble is L (container.py).
LEVEL_PRESET_BASE = 10


def level_codec(level: Level) -> dict[str, int]:
    """A level's header settings as nczip's engine codes them: no drift checkpoints, since its
    floats are the same on every machine (the original's checksum is checked before output)."""
    codec = {"cdf_bits": 31, "check_every": 0, "keep": level.window * 3 // 4, "lane_tokens": level.lane_tokens,
             "lanes": level.lanes, "n_batch": N_BATCH, "primer": level.primer, "window": level.window,
             SLIDE_KEY: SLIDE_SHIFT}
    if level.ensemble is not None:
        codec[ENSEMBLE_PRESET_KEY] = level.ensemble
    return codec


CODEC_PRESETS = {
    # nczip 0.1's defaults (windows restart)
    1: {"cdf_bits": 31, "check_every": 4096, "keep": 2048, "lane_tokens": 2048, "lanes": 16, "n_batch": 512,
        "primer": 512, "window": 4096},
    # the default of 2026-11-29 to 2026-12-05: windows shift
    2: {"cdf_bits": 31, "check_every": 4096, "keep": 3072, "lane_tokens": 2048, "lanes": 16, "n_batch": 512,
        "primer": 512, "window": 4096, SLIDE_KEY: SLIDE_SHIFT},
    **{LEVEL_PRESET_BASE + number: level_codec(level) for number, level in LEVELS.items()},
}


def codec_params(level: int = DEFAULT_LEVEL, *, llm_only: bool = False, **overrides) -> CodecParams:
    """CodecParams of a level, with some settings given explicitly (None: the level's). keep
    defaults to 3/4 of the window when windows shift, 1/2 when they restart."""
    if level not in LEVELS:
        raise ValueError(f"level must be in 1..9, got {level!r}")
    base = LEVELS[level]
    given = {k: v for k, v in overrides.items() if v is not None}
    slide = given.get("slide", SLIDE_SHIFT)
    window = given.get("window", base.window)
    keep = given.get("keep", window * 3 // 4 if slide == SLIDE_SHIFT else window // 2)
    ensemble = None if llm_only or base.ensemble is None else ENSEMBLE_PRESETS[base.ensemble]
    values = dict(window=window, keep=keep, slide=slide, lanes=base.lanes, lane_tokens=base.lane_tokens,
                  primer=base.primer, ensemble=ensemble)
    values.update({k: v for k, v in given.items() if k not in ("window", "keep", "slide")})
    return CodecParams(**values)


def header_params(params: CodecParams, n_vocab: int) -> dict[str, int]:
    """The header parameters of an LLM segment coded with `params`: a preset number where the
    settings are one (codec and ensemble together, else codec alone), else every key."""
    codec = {
        "cdf_bits": params.cdf_bits, "check_every": params.check_every, "keep": params.keep,
        "lane_tokens": params.lane_tokens, "lanes": params.lanes, "n_batch": N_BATCH, "primer": params.primer,
        "window": params.window,
    }
    if params.slide != SLIDE_RESTART:
        codec[SLIDE_KEY] = params.slide
    ensemble = params.ensemble.header_items() if params.ensemble is not None else {}
    for number, values in CODEC_PRESETS.items():
        if values == {**codec, **ensemble}:
            return {CODEC_PRESET_KEY: number, "n_vocab": n_vocab}
    for number, values in CODEC_PRESETS.items():
        if values == codec:
            return {CODEC_PRESET_KEY: number, "n_vocab": n_vocab, **ensemble}
    return {**codec, "n_vocab": n_vocab, **ensemble}


class HeaderParamsError(ValueError):
    """Header parameters this nczip cannot honour; `newer` when a newer nczip probably wrote them."""

    def __init__(self, message: str, newer: bool):
        super().__init__(message)
        self.newer = newer


def params_from_header(header: Mapping[str, int]) -> CodecParams:
    """The CodecParams an archive's header names (its n_vocab aside); HeaderParamsError if this
    nczip cannot honour them."""
    params = dict(header)
    if CODEC_PRESET_KEY in params:
        number = params.pop(CODEC_PRESET_KEY)
        if number not in CODEC_PRESETS:
            raise HeaderParamsError(
                f"archive names codec preset {number}; this nczip knows {sorted(CODEC_PRESETS)} "
                "(it was probably written by a newer nczip)", newer=True)
        overlap = sorted(set(params) & set(CODEC_PRESETS[number]))
        if overlap:
            raise HeaderParamsError(f"archive names codec preset {number} and also {', '.join(overlap)}", newer=False)
        params.update(CODEC_PRESETS[number])
    slide = params.pop(SLIDE_KEY, SLIDE_RESTART)
    keys = set(params)
    uses_ensemble = ENSEMBLE_PRESET_KEY in keys or any(k.startswith(ENSEMBLE_PREFIX) for k in keys)
    if ENSEMBLE_PRESET_KEY in keys:
        expected = PARAM_KEYS | {ENSEMBLE_PRESET_KEY}
    elif uses_ensemble:
        expected = PARAM_KEYS | EnsembleParams.header_keys()
        if keys == PARAM_KEYS | EnsembleParams.legacy_header_keys():
            expected = keys  # written before max_table_bits existed (EnsembleParams.from_header)
    else:
        expected = PARAM_KEYS
    if keys != expected:
        unknown, missing = sorted(keys - expected), sorted(expected - keys)
        raise HeaderParamsError(
            f"archive parameters differ from what this nczip understands (unknown: {unknown or 'none'}, "
            f"missing: {missing or 'none'}); it was probably written by another nczip version", newer=True)
    if params["n_batch"] != N_BATCH:
        raise HeaderParamsError(f"archive was coded with n_batch={params['n_batch']}; this nczip uses {N_BATCH}",
                                newer=True)
    try:
        return CodecParams(
            window=params["window"], keep=params["keep"], slide=slide, cdf_bits=params["cdf_bits"],
            check_every=params["check_every"], lanes=params["lanes"], lane_tokens=params["lane_tokens"],
            primer=params["primer"], ensemble=EnsembleParams.from_header(params) if uses_ensemble else None,
        )
    except ValueError as exc:
        raise HeaderParamsError(f"archive has invalid coding parameters: {exc}", newer=False) from None


@dataclass
class CodingStats:
    """Measured while coding; never influences the bits."""

    tokens: int = 0
    ideal_bits: float = 0.0  # -sum log2 p under the float distribution (only when measured)
    seconds: float = 0.0
    measure_ideal: bool = False

