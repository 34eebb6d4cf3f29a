"""Early drift detection: a decoder whose model computes different floats stops at the first
checkpoint after the difference, naming the segment and token, instead of decoding garbage."""
from __future__ import annotations

import numpy as np
import pytest

from nczip import DriftError, container
from nczip.api import Compressor
from nczip.codec import CHECKPOINT_BYTES, CodecParams, checkpoint_count, decode_tokens, encode_tokens

TEXT = b"Drift must be caught at the first checkpoint after it starts, not at the end. " * 6


class PerturbedModel:
    """Like another llama.cpp build: from evaluation call `start` on, one logit is off by a hair."""

    def __init__(self, model, start: int, delta: float = 1e-6):
        self.model, self.start, self.delta = model, start, delta
        self.calls = 0
        for name in ("identity", "n_vocab", "bos", "n_batch"):
            setattr(self, name, getattr(model, name))

    n_ctx = property(lambda self: self.model.n_ctx)
    n_lanes = property(lambda self: self.model.n_lanes)

    def configure(self, n_ctx, n_lanes):
        self.model.configure(n_ctx, n_lanes)

    def reset(self):
        self.model.reset()

    def clear_lane(self, lane):
        self.model.clear_lane(lane)

    def copy_lane(self, source, target):
        self.model.copy_lane(source, target)

    def shift_lane(self, lane, start, end):
        self.model.shift_lane(lane, start, end)

    def _perturb(self, logits):
        if self.calls >= self.start:
            logits[..., 7] += self.delta * np.maximum(1.0, np.abs(logits[..., 7]))
        self.calls += 1
        return logits

    def evaluate(self, tokens, start, lane=0):
        return self._perturb(np.array(self.model.evaluate(tokens, start, lane), copy=True))

    def evaluate_rows(self, tokens, positions, lanes):
        return self._perturb(np.array(self.model.evaluate_rows(tokens, positions, lanes), copy=True))


def ids_of(model, data: bytes) -> list[int]:
    from nczip import tokens

    return tokens.tokenize_exact(data, model)


@pytest.mark.parametrize("start,expected_token", [(0, 0), (1, 16), (16, 16), (17, 32), (40, 48)])
def test_drift_is_reported_at_the_first_checkpoint_after_it(tiny_model, start, expected_token):
    params = CodecParams(window=64, keep=32, check_every=16)
    ids = ids_of(tiny_model, TEXT)
    assert len(ids) > 60
    payload = encode_tokens(tiny_model, ids, params)
    with pytest.raises(DriftError) as excinfo:
        decode_tokens(PerturbedModel(tiny_model, start), payload, len(ids), params, segment_index=2)
    # Evaluation call i gives the logits that predict token i (no slide before token 63 here).
    assert excinfo.value.token_index == expected_token
    assert excinfo.value.segment_index == 2
    assert f"segment 3: the model's predictions differ from the encoder's at token {expected_token}" in str(excinfo.value)


def test_same_floats_pass_every_checkpoint(tiny_model):
    params = CodecParams(window=64, keep=32, check_every=5)
    ids = ids_of(tiny_model, TEXT)
    payload = encode_tokens(tiny_model, ids, params)
    assert decode_tokens(PerturbedModel(tiny_model, start=10**9), payload, len(ids), params) == ids


def test_checkpoints_are_appended_to_an_unchanged_coder_stream(tiny_model):
    ids = ids_of(tiny_model, TEXT)
    sparse = encode_tokens(tiny_model, ids, CodecParams(window=64, keep=32, check_every=1 << 30))
    dense = encode_tokens(tiny_model, ids, CodecParams(window=64, keep=32, check_every=10))
    assert checkpoint_count(len(ids), CodecParams(check_every=10)) == (len(ids) - 1) // 10 + 1
    n_dense = checkpoint_count(len(ids), CodecParams(check_every=10)) * CHECKPOINT_BYTES
    assert dense[:-n_dense] == sparse[:-CHECKPOINT_BYTES]


def test_default_checkpoint_cost_is_under_0_2_percent():
    # 2 bytes per 4096 tokens; at the ~3.5 bits per token Gemma codes prose with, that is 0.11%.
    params = CodecParams()
    assert CHECKPOINT_BYTES * 8 / (params.check_every * 3.5) < 0.002


def test_drift_through_the_cli_path_is_one_error(tiny_gguf):
    """The whole pipeline: an archive whose checkpoint disagrees raises DriftError (an NczipError)."""
    with Compressor(model=tiny_gguf, route="llm", threads=1, window=64, check_every=4096) as c:
        archive = container.read_archive(c.compress(TEXT))
        (seg,) = archive.segments
        forged_payload = seg.payload[:-1] + bytes([seg.payload[-1] ^ 1])  # flip a checkpoint bit
        forged = container.Archive(
            archive.header, (container.Segment(seg.method, seg.original_size, seg.token_count, forged_payload),)
        )
        with pytest.raises(DriftError, match="segment 1: .* at token 0"):
            c.decompress(container.write_archive(forged))
