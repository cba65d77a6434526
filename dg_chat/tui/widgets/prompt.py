"""The multi-line prompt: Enter sends; Ctrl+J (or Shift+Enter where the terminal reports it) adds a line."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class Prompt(TextArea):
    BINDINGS = [
        # priority: TextArea would otherwise take Enter as a newline before any binding sees it
        Binding("enter", "send", "Send", id="send", priority=True, tooltip="Send the message"),
        # Shift+Enter reaches the app only in terminals with the kitty keyboard protocol;
        # Ctrl+J (a line feed) works everywhere.
        Binding("ctrl+j,shift+enter", "newline", "New line", id="newline", show=False, tooltip="Insert a line break"),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, compact=True,
                         placeholder="Message (Enter: send · Ctrl+J: new line)")

    def action_send(self) -> None:
        if self.text.strip():
            self.post_message(self.Submitted(self.text))

    def action_newline(self) -> None:
        self.insert("\n")
