"""Lossless tokenization: pieces concatenate to the input, whatever the tokenizer does."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from corpora.samples import edge_cases
from nczip import tokens


class ByteLevelTokenizer:
    """A fake model: ids 0..255 are byte tokens, 256.. are words from a small list."""

    WORDS = [b"the", b" the", b"and", b" and", b"ing", b"\n", b" ", b"\xc3\xa9"]

    def __init__(self, mangle=None):
        self.mangle = mangle  # a function that breaks tokenization of some texts

    def tokenize(self, text: bytes) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for w, word in sorted(enumerate(self.WORDS), key=lambda x: -len(x[1])):
                if text.startswith(word, i):
                    ids.append(256 + w)
                    i += len(word)
                    break
            else:
                ids.append(text[i])
                i += 1
        return self.mangle(text, ids) if self.mangle else ids

    def piece(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else self.WORDS[token - 256]

    def byte_token(self, value: int) -> int:
        return value


def drop_last_token(text, ids):
    return ids[:-1]  # a tokenizer that loses a byte: must be caught


def swap_crlf(text, ids):
    # A normalizing tokenizer: CR LF becomes LF.
    out = []
    for t in ids:
        if out and out[-1] == 13 and t == 256 + 5:
            out[-1] = t
        else:
            out.append(t)
    return out


@pytest.mark.parametrize("name,data", sorted(edge_cases().items()))
@pytest.mark.parametrize("mangle", [None, drop_last_token, swap_crlf])
def test_pieces_concatenate_to_the_input(name, data, mangle):
    model = ByteLevelTokenizer(mangle)
    ids = tokens.tokenize_exact(data, model)
    assert tokens.detokenize(ids, model) == data


def test_invalid_utf8_becomes_byte_tokens():
    model = ByteLevelTokenizer()
    ids = tokens.tokenize_exact(b"the\xff\xfeand", model)
    assert ids == [256 + 0, 0xFF, 0xFE, 256 + 2]


def test_good_tokenization_is_kept():
    model = ByteLevelTokenizer()
    assert tokens.tokenize_exact(b"the and", model) == [256, 256 + 3]


def test_long_runs_are_split_without_breaking_characters(monkeypatch):
    monkeypatch.setattr(tokens, "MAX_RUN_BYTES", 64)
    data = ("é" * 100 + "\n" + "the " * 50).encode()
    model = ByteLevelTokenizer()
    assert tokens.detokenize(tokens.tokenize_exact(data, model), model) == data


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, drop_last_token, swap_crlf]))
def test_arbitrary_bytes_round_trip(data, mangle):
    model = ByteLevelTokenizer(mangle)
    assert tokens.detokenize(tokens.tokenize_exact(data, model), model) == data


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_round_trips_on_the_tiny_model(tiny_model, text):
    data = text.encode("utf-8", errors="surrogatepass")
    assert tokens.detokenize(tokens.tokenize_exact(data, tiny_model), tiny_model) == data


def test_real_tokenizer_uses_multi_byte_tokens(tiny_model):
    data = b"the cat and the dog were running"
    ids = tokens.tokenize_exact(data, tiny_model)
    assert len(ids) < len(data) / 2
