"""The app's own actions in the command palette (Ctrl+P), next to Textual's system commands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from textual.app import SystemCommand


class HasActions(Protocol):
    def run_action(self, action: str) -> object: ...


APP_COMMANDS = (
    ("New chat", "Start a new chat", "new_chat"),
    ("Model", "Choose and load another model", "pick_model"),
    ("Settings", "Sampler settings of this chat", "settings"),
    ("Export", "Export this chat to Markdown and JSON", "export"),
    ("Replay", "Replay how the last answer was denoised", "replay_last"),
    ("Thinking", "Thinking mode on/off for this chat", "toggle_thinking"),
    ("Key bindings", "Every key binding by id", "help"),
)
"""(title, help, action) of each palette entry."""


def app_commands(app: HasActions) -> Iterator[SystemCommand]:
    for title, help_text, action in APP_COMMANDS:
        yield SystemCommand(title, help_text, lambda action=action: app.run_action(action))
