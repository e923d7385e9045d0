"""Frame sizes: ASCII text is measured without encoding it; text long enough to hide a large frame is still
measured in UTF-8 bytes, short text in characters (as before)."""

from __future__ import annotations

import pytest
from haggle_gateway.links import Frame


@pytest.mark.parametrize("text", ["a" * 300, "a" * 5000, "é" * 300, "😀" * 300, "a" * 299 + "\udc80"])
def test_long_text_size_is_utf8_bytes(text: str) -> None:
    assert Frame(text=text).size == len(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("text", ["", "a" * 10, "é" * 10, "a" * 256])
def test_short_text_size_is_characters(text: str) -> None:
    assert Frame(text=text).size == len(text)


def test_binary_and_closed_sizes() -> None:
    assert Frame(binary=b"\x00" * 7).size == 7
    assert Frame(closed=True).size == 0
