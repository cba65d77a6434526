"""Untrusted text (model output, user input, chat titles, error lines) made safe to display.

Textual's Markdown and Static pass control characters straight to the terminal, so a model
that writes ESC [2J or an OSC 52 sequence could clear the screen or set the clipboard.
Every piece of untrusted text goes through `printable` before reaching a widget, and is
shown with markup disabled (Rich markup such as "[bold]" stays literal).
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

# C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides
# that can make text read differently from what it is ("trojan source").
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ESC -> "␛"
    return "\u2421" if code == 0x7F else "\ufffd"


def printable(text: str) -> str:
    """`text` with every control character replaced by a visible stand-in."""
    return _UNSAFE.sub(_visible, text)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced and indented code blocks of a Markdown text, in order."""
    return [token.content for token in MarkdownIt("commonmark").parse(markdown)
            if token.type in ("fence", "code_block")]


def one_line(error: BaseException | str) -> str:
    """An error as one readable line (engines should raise one-line errors; this is the fallback)."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
