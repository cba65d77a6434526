"""One message of the transcript: a header, the model's thinking (dim, collapsible) and Markdown.

While a model answer is generated, each committed block is appended through a
`MarkdownStream` (only the last Markdown block is re-parsed); when the turn ends the whole
text is set once with `Markdown.update`. All text passes through `printable`.
"""

from __future__ import annotations

from typing import Any, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

from dg_chat.engine.events import EMPTY_ANSWER
from dg_chat.engine.model_info import ModelInfo
from dg_chat.store import INCOMPLETE, Status
from dg_chat.text.canvas import block_count
from dg_chat.text.sanitize import printable, visible
from dg_chat.tui.text import code_blocks, message_parser

Generating = Literal["generating"]
GENERATING: Generating = "generating"
"""A status shown only while the answer is produced (the store says "partial")."""
ViewStatus = Literal[Status, Generating]
"""What a message view shows: a stored status, or that the answer is being produced."""


def stats_label(stats: dict[str, Any] | None) -> str:
    """`42 tok · 2 blocks × 25.5 steps · 17.3 tok/s` of a finished answer's stats (steps: per block, on
    average), then `cut short` if it had no end of turn; a count the server did not report (None) is
    left out, not shown as 0."""
    if not stats:
        return ""
    blocks, tokens = stats.get("blocks", 0), stats.get("tokens", 0)
    steps, speed = stats.get("steps_per_block", 0.0), stats.get("tokens_per_second", 0.0)
    return " · ".join(part for part in (
        f"{tokens} tok" if tokens is not None else "",
        block_count(blocks) + (f" × {steps:.3g} steps" if steps is not None else ""),
        f"{speed:.1f} tok/s" if speed is not None else "",
        "cut short" if stats.get("truncated") else "") if part)


STATUS_LABELS: dict[ViewStatus, str] = {
    "complete": "",
    GENERATING: "generating…",
    "partial": "interrupted",
    "stopped": "stopped",
    "failed": "failed",
}
"""The header's word for each status (tests/test_defined_once.py checks that every status has one)."""


def status_label(status: ViewStatus, error: str = "") -> str:
    label = STATUS_LABELS[status]
    return f"{label}: {error}" if status == "failed" and error else label


class MessageView(Vertical, can_focus=True):
    BINDINGS = [
        Binding("c", "copy", "Copy", id="copy-message", tooltip="Copy this message to the clipboard"),
        Binding("y", "copy_code", "Copy code", id="copy-code",
                tooltip="Copy a code block of this message (again: the next one)"),
        Binding("p", "replay", "Replay", id="replay", tooltip="Replay the denoising of this answer"),
        Binding("up", "focus_neighbour(-1)", "Previous", id="previous-message", show=False),
        Binding("down", "focus_neighbour(1)", "Next", id="next-message", show=False),
        Binding("left", "version(-1)", "Earlier version", id="previous-version", show=False,
                tooltip="Show the earlier version of a regenerated answer"),
        Binding("right", "version(1)", "Later version", id="next-version", show=False,
                tooltip="Show the later version of a regenerated answer"),
    ]

    class ReplayRequested(Message):
        def __init__(self, view: MessageView) -> None:
            super().__init__()
            self.view = view

    class VersionRequested(Message):
        """Show the version `direction` (-1, 1) away of this answer."""

        def __init__(self, view: MessageView, direction: int) -> None:
            super().__init__()
            self.view = view
            self.direction = direction

    def __init__(self, role: str, content: str = "", *, thinking: str = "", status: ViewStatus = "complete",
                 error: str = "", message_id: int | None = None, model: ModelInfo | None = None,
                 stats: dict[str, Any] | None = None, version: tuple[int, int] = (1, 1)) -> None:
        super().__init__(classes=f"message {role}")
        self.set_class(status in INCOMPLETE, "incomplete")
        self.role = role
        self.content = content
        self.thinking = thinking
        self.status: ViewStatus = status
        self.error = error
        self.message_id = message_id
        self.model = model
        """The model that wrote this answer (None: not recorded, or a user message)."""
        self.stats = stats
        self.version = version
        """(which, of how many) versions of a regenerated answer, from 1."""
        self._streams: dict[str, MarkdownStream] = {}
        self._next_code_block = 0

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="message-header", markup=False)
        if self.role == "model":
            # open while the model thinks, folded once the answer is there (click or Enter opens it)
            with Collapsible(title=self._thinking_title(), collapsed=self.status != GENERATING,
                             classes="thinking") as thinking:
                thinking.display = bool(self.thinking)
                yield Markdown(printable(self.thinking), classes="thinking-text", parser_factory=message_parser,
                               open_links=False)
        yield Markdown(self._shown_text(), classes="message-text", parser_factory=message_parser, open_links=False)

    def _thinking_title(self) -> str:
        if self.status == GENERATING:
            return "Thinking…"
        return f"Thinking · {len(self.thinking.split())} words"

    def _shown_text(self) -> str:
        """The answer as Markdown; a finished answer without text says so."""
        if self.role == "model" and self.status == "complete" and not self.content:
            return f"*{EMPTY_ANSWER}*"
        return printable(self.content)

    def _header(self) -> str:
        name = {"user": "You", "model": "Model", "system": "System"}.get(self.role, self.role)
        which, count = self.version
        parts = [name, f"◀ {which}/{count} ▶" if count > 1 else "", self.model.title() if self.model else "",
                 status_label(self.status, self.error), stats_label(self.stats)]
        return visible(" · ".join(part for part in parts if part))  # one line, whatever a model's name holds

    def set_status(self, status: ViewStatus, error: str = "") -> None:
        self.status, self.error = status, error
        self.query_one(".message-header", Static).update(self._header())
        self.set_class(status in INCOMPLETE, "incomplete")

    async def show_committed(self, thinking: str, answer: str) -> None:
        """Append what the newest block added to the thinking and the answer."""
        if thinking != self.thinking:
            self.query_one(".thinking", Collapsible).display = True
            await self._stream("thinking", self.query_one(".thinking-text", Markdown), self.thinking, thinking)
            self.thinking = thinking
        if answer != self.content:
            await self._stream("content", self.query_one(".message-text", Markdown), self.content, answer)
            self.content = answer

    async def _stream(self, name: str, markdown: Markdown, old: str, new: str) -> None:
        if new.startswith(old):
            if name not in self._streams:
                self._streams[name] = Markdown.get_stream(markdown)
            await self._streams[name].write(printable(new[len(old):]))
        else:  # a later block changed earlier text (the thinking/answer split moved): redo it whole
            if name in self._streams:
                await self._streams.pop(name).stop()
            await markdown.update(printable(new))

    async def finish(self, thinking: str, answer: str, status: Status, error: str = "",
                     stats: dict[str, Any] | None = None) -> None:
        """End of the turn: stop streaming and set the final text in one update."""
        for stream in self._streams.values():
            await stream.stop()
        self._streams.clear()
        self.thinking, self.content, self.stats = thinking, answer, stats
        self.set_status(status, error)
        folded = self.query_one(".thinking", Collapsible)
        folded.display, folded.collapsed, folded.title = bool(thinking), True, self._thinking_title()
        for markdown, text in ((self.query_one(".thinking-text", Markdown), printable(thinking)),
                               (self.query_one(".message-text", Markdown), self._shown_text())):
            if markdown.source != text:  # as streamed already: parsing a long answer again stalls the app
                await markdown.update(text)

    @on(Markdown.LinkClicked)
    def _link_clicked(self, event: Markdown.LinkClicked) -> None:
        """A link in model text may say one thing and lead elsewhere (any scheme an OS opens): it
        is copied, with where it leads, never opened."""
        event.stop()
        self.app.copy_to_clipboard(event.href)
        self.notify(f"Link copied, not opened: {visible(event.href)}", markup=False)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(printable(self.content))  # as shown: no hidden escape or bidi mark
        self.notify("Message copied to the clipboard")

    def action_copy_code(self) -> None:
        blocks = code_blocks(self.content)
        if not blocks:
            self.notify("This message has no code block", severity="warning")
            return
        index = self._next_code_block % len(blocks)
        self._next_code_block = index + 1
        self.app.copy_to_clipboard(printable(blocks[index]))
        self.notify(f"Code block {index + 1} of {len(blocks)} copied to the clipboard")

    def action_replay(self) -> None:
        self.post_message(self.ReplayRequested(self))

    def action_version(self, direction: int) -> None:
        if self.version[1] > 1:
            self.post_message(self.VersionRequested(self, direction))

    def action_focus_neighbour(self, direction: int) -> None:
        if direction < 0:
            self.screen.focus_previous(MessageView)
        else:
            self.screen.focus_next(MessageView)
