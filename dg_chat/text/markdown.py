"""Untrusted text inside a Markdown document, shown as it is written: an answer that contains
"## You", `</details>` or an image link must not forge a turn of the chat, close the block
around it, or make a Markdown viewer fetch a URL (CommonMark: fenced code blocks and backslash
escapes, https://spec.commonmark.org/0.31.2/)."""

from __future__ import annotations

import re

_BACKTICK_RUN = re.compile(r"`+")
_SPECIAL = re.compile(r"([\\`*\[\]<>!#&|])")  # code, emphasis, links and images, HTML and entities, headings, tables


def literal_block(text: str) -> list[str]:
    """The lines of a fenced code block holding `text`: its fence is longer than any run of
    backticks in it, so nothing in it ends the block."""
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", text, fence]


def literal_inline(text: str) -> str:
    """`text` on one line, every character that could start Markdown or HTML escaped (not "_",
    so that Q4_K_M reads as it is: in a word it is no emphasis)."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.split()))
