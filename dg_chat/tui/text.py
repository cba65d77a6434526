"""Text helpers of the TUI. Untrusted text goes through dg_chat.text.sanitize.printable before
it reaches a widget, because Textual's Markdown and Static pass control characters straight to
the terminal; widgets show it with markup disabled (Rich markup such as "[bold]" stays literal)."""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced and indented code blocks of a Markdown text, in order."""
    return [token.content for token in MarkdownIt("commonmark").parse(markdown)
            if token.type in ("fence", "code_block")]


def _keep_line_breaks(state: StateCore) -> None:
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


def message_parser() -> MarkdownIt:
    """Markdown of messages: GFM-like, but a single line break stays one (poems, addresses and
    lists without markers are written that way; plain Markdown would join the lines)."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("keep_line_breaks", _keep_line_breaks)
    return parser


def one_line(error: BaseException | str) -> str:
    """An error as one readable line (engines should raise one-line errors; this is the fallback)."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
