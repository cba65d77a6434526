"""The multi-line prompt: Enter sends; Ctrl+J (or Shift+Enter where the terminal reports it) adds a line.

Send and new line are run from the prompt's own key handler, in the order the keys arrived: a
burst of keys (a paste, fast typing, `tmux send-keys`) sends exactly what the box holds when its
Enter comes, never a prefix of it, and the keys after that Enter go into the emptied box.

The box draws its text as it is, so text from elsewhere comes in with its controls as visible
stand-ins (sanitize.py): an earlier prompt and a message to edit here, a paste in the app (for
every widget). An answer copied and pasted back cannot send an escape sequence to the terminal.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from dg_chat.text.sanitize import printable
from dg_chat.tui.widgets.prompt_history import PromptHistory

OWN_ACTIONS = ("send", "newline")
"""Actions run in key order by the prompt itself (an app-level binding would run ahead of the
keys still queued for the prompt)."""


class Prompt(TextArea):
    BINDINGS = [
        Binding("enter", "send", "Send", id="send", tooltip="Send the message"),
        # Shift+Enter reaches the app only in terminals with the kitty keyboard protocol;
        # Ctrl+J (a line feed) works everywhere.
        Binding("ctrl+j,shift+enter", "newline", "New line", id="newline", show=False, tooltip="Insert a line break"),
        Binding("up", "history(-1)", "Earlier prompt", id="prompt-history-previous", show=False,
                tooltip="Empty prompt: the earlier prompt"),
        Binding("down", "history(1)", "Later prompt", id="prompt-history-next", show=False,
                tooltip="Recalling: the later prompt"),
    ]

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, compact=True,
                         placeholder="Message (Enter: send · Ctrl+J: new line · ↑: history)")
        self.prompt_history = PromptHistory()
        self._draft = ""

    async def _on_key(self, event: events.Key) -> None:
        active = self.app.active_bindings.get(event.key)
        if active is not None and active.node is self and active.binding.action in OWN_ACTIONS:
            event.stop()
            event.prevent_default()  # TextArea would insert Enter as a newline
            await self.run_action(active.binding.action)

    def action_send(self) -> None:
        """Hand the text over and empty the box at once (the app puts it back if it cannot send)."""
        text = self.text
        if text.strip():
            self.prompt_history.remember(text)
            self.clear()
            self.post_message(self.Submitted(text))

    def action_newline(self) -> None:
        self.insert("\n")

    def action_history(self, direction: int) -> None:
        recalled = self.prompt_history.step(self.text, direction)
        if recalled is None and direction < 0:
            self.action_cursor_up()
        elif recalled is None:
            self.action_cursor_down()
        else:
            self.text = printable(recalled)
            self.move_cursor(self.document.end)

    def begin_edit(self, text: str) -> None:
        """Show `text` to edit it; what was typed but not sent comes back at `end_edit`."""
        self._draft = self.text
        self.text = printable(text)
        self.move_cursor(self.document.end)

    def end_edit(self, *, cancelled: bool) -> None:
        """Done editing (sent or cancelled): the draft typed before the edit is back in the box."""
        if cancelled:
            self.clear()
        if self._draft:
            self.restore(self._draft)
        self._draft = ""

    def restore(self, text: str) -> None:
        """Put back a message that could not be sent, before whatever was typed since."""
        typed = self.text
        self.text = f"{text}\n{typed}" if typed else text
        self.move_cursor(self.document.end)
