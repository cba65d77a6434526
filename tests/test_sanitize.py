"""The sanitiser of untrusted text (model output, file metadata): only newline and tab pass."""

from __future__ import annotations

import pytest

from dg_chat.text.sanitize import printable, visible, well_formed

FORMATTING = [0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
"""Bidi marks, embeddings, overrides and isolates, and the line and paragraph separators."""
INVISIBLE = [0x180E, 0x200B, *range(0x2060, 0x2065), *range(0x206A, 0x2070), 0xFEFF, *range(0xFFF9, 0xFFFC),
             *range(0xE0000, 0xE0080)]
"""Format characters that show nothing: zero-width spaces, invisible operators, tag characters."""


def passes(code: int) -> bool:
    return code in (0x09, 0x0A) or 0x20 <= code <= 0x7E


@pytest.mark.parametrize("code", [*range(0xA0), *FORMATTING, *INVISIBLE], ids=lambda code: f"U+{code:04X}")
def test_only_newline_tab_and_printable_ascii_pass(code):
    text = f"a{chr(code)}b"
    safe = printable(text)
    if passes(code):
        assert safe == text
    else:
        assert len(safe) == 3 and safe[0] == "a" and safe[2] == "b" and safe[1] != chr(code)
        assert not passes(ord(safe[1])) and ord(safe[1]) >= 0x2400  # a visible stand-in, not a control


@pytest.mark.parametrize("code", [*range(0xA0), *FORMATTING, *INVISIBLE], ids=lambda code: f"U+{code:04X}")
def test_one_line_text_lets_no_control_through(code):
    safe = visible(f"a{chr(code)}b")
    assert safe == f"a{chr(code)}b" if 0x20 <= code <= 0x7E else safe[1] != chr(code) and len(safe) == 3


def test_hidden_ascii_in_tag_characters_shows_and_joiners_that_words_and_emoji_need_stay():
    smuggled = "ok" + "".join(chr(0xE0000 + ord(c)) for c in "rm -rf")  # invisible, yet a model reads it
    assert printable(smuggled) == "ok" + "\ufffd" * 6
    for kept in ("👨\u200d👩\u200d👧", "می\u200cخواهم"):  # ZWJ in an emoji, ZWNJ in a Persian word
        assert printable(kept) == visible(kept) == kept


def test_a_carriage_return_cannot_overwrite_a_printed_line():
    assert printable("done\rFAKE") == "done\u240dFAKE"
    assert printable("trailing\r") == "trailing\u240d"
    assert printable("windows\r\nline") == "windows\nline"  # a CRLF line end is a newline


def test_undecodable_input_becomes_replacement_characters():
    raw = b"caf\xc3\xa9 \xff\xfe \xe4\xb8\x96".decode("utf-8", "surrogateescape")  # as argv and stdin give it
    assert well_formed(raw) == "café \ufffd\ufffd 世"
    assert well_formed("\ud800 and \udfff") == "\ufffd and \ufffd"  # lone surrogates from a JSON escape
    assert well_formed(raw).encode("utf-8")  # now encodable, as tokenizers and SQLite need
