"""Output is stored byte for byte, cut only where a UTF-8 character ends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from egw.core.chunks import Utf8Boundary, split_point


def test_a_character_split_across_reads_is_held_until_complete() -> None:
    chunker = Utf8Boundary()
    e_acute = "é".encode()
    assert chunker.feed(b"caf" + e_acute[:1]) == b"caf"
    assert chunker.pending == 1
    assert chunker.feed(e_acute[1:] + b"!") == "é!".encode()
    assert chunker.pending == 0
    euro = "€".encode()
    assert chunker.feed(euro[:2]) == b"" and chunker.pending == 2
    assert chunker.feed(euro[2:]) == euro


def test_bytes_that_are_not_utf8_pass_as_they_are() -> None:
    chunker = Utf8Boundary()
    assert chunker.feed(b"\xff\xfe") == b"\xff\xfe"
    assert chunker.feed(b"a\x80") == b"a\x80"  # a stray continuation byte is not held
    assert chunker.feed(b"\xe2\x82") == b"" and chunker.flush() == b"\xe2\x82"
    assert split_point(b"ok\xf0\x9f\x98") == 2
    assert split_point(b"ok\xf0\x9f\x98\x80") == 6
    assert split_point(b"\xc0") == 1  # never a lead byte in UTF-8: nothing to wait for


@given(st.binary(max_size=64), st.lists(st.integers(0, 64), max_size=8))
def test_every_byte_comes_out_once_in_order(data: bytes, cuts: list[int]) -> None:
    chunker, out, at = Utf8Boundary(), b"", 0
    for cut in sorted(cuts):
        out += chunker.feed(data[at:cut])
        at = max(at, cut)
    out += chunker.feed(data[at:]) + chunker.flush()
    assert out == data


@given(st.text(max_size=40), st.lists(st.integers(0, 200), max_size=8))
def test_valid_text_is_never_cut_inside_a_character(text: str, cuts: list[int]) -> None:
    data, chunker, at = text.encode(), Utf8Boundary(), 0
    for cut in sorted(cuts):
        chunk = chunker.feed(data[at:cut])
        chunk.decode("utf-8")  # each chunk decodes on its own
        at = max(at, cut)
    assert (chunker.feed(data[at:]) + chunker.flush()).decode("utf-8") is not None
