"""The segment cut rule: complete, bounded, never splitting a UTF-8 character, and local."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

from nczip import segment


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=150).map(str.encode), st.integers(4, 64))
def test_segments_cover_the_input_in_bounded_pieces(data, limit):
    parts = [bytes(p) for p in segment.split(data, limit)]
    assert b"".join(parts) == data
    assert all(0 < len(p) <= limit for p in parts)


@settings(max_examples=examples(300), deadline=None)
@given(st.text(min_size=1, max_size=150), st.integers(4, 64))
def test_valid_utf8_is_never_split_inside_a_character(text, limit):
    for part in segment.split(text.encode(), limit):
        bytes(part).decode("utf-8")  # raises if a character was split


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(min_size=70, max_size=400), st.integers(4, 64))
def test_a_cut_depends_only_on_the_bytes_before_it(data, limit):
    """What lets a streaming writer cut where the one-shot path does."""
    first = len(next(iter(segment.split(data, limit))))
    if len(data) > limit:
        assert segment.cut_point(data[: limit + 1], limit) == first


def test_default_limit_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(segment, "SEGMENT_BYTES", 10)
    assert [len(p) for p in segment.split(b"x" * 25)] == [10, 10, 5]


@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=100).map(str.encode)), st.integers(4, 40),
       st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_a_stream_is_cut_where_the_whole_is(data, limit, read_sizes):
    """split_stream gives split()'s segments whatever sizes the reads return (a pipe returns
    fewer bytes than asked)."""
    position, sizes = 0, iter(read_sizes * 100)

    def read(n: int) -> bytes:
        nonlocal position
        chunk = data[position : position + min(n, next(sizes, n))]
        position += len(chunk)
        return chunk

    assert list(segment.split_stream(read, limit)) == [bytes(s) for s in segment.split(data, limit)]
