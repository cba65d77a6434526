"""The key help: every binding of the app by id, with the key it has now (after `ui.keymap`)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

_NAMES = {"ctrl": "Ctrl", "shift": "Shift", "alt": "Alt", "escape": "Esc", "enter": "Enter", "space": "Space",
          "question_mark": "?", "up": "↑", "down": "↓", "left": "←", "right": "→", "pageup": "PgUp",
          "pagedown": "PgDn", "home": "Home", "end": "End", "tab": "Tab", "delete": "Del"}


def key_label(keys: str) -> str:
    """`ctrl+r,f5` as the README writes it: `Ctrl+R, F5`."""
    def one(key: str) -> str:
        parts = key.strip().split("+")
        named = [_NAMES.get(part, part.upper() if len(parts) > 1 or part[:1] == "f" else part) for part in parts]
        return "+".join(named)

    return ", ".join(one(key) for key in keys.split(","))


@dataclass(frozen=True, slots=True)
class KeyRow:
    keys: str
    """As shown to the user: `Ctrl+R`, `Esc`."""
    id: str
    description: str


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss(None)", "Close", id="help-close")]

    def __init__(self, groups: list[tuple[str, list[KeyRow]]]) -> None:
        super().__init__(classes="dialog")
        self.groups = groups

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="help-box"):
            yield Label("Keys by binding id ([ui.keymap] in config.toml remaps them) · Esc: close",
                        classes="dialog-title")
            with VerticalScroll(id="help-keys"):
                yield Static(self._table())

    def _table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
        table.add_column("key", no_wrap=True)
        table.add_column("binding id", no_wrap=True, style="cyan")
        table.add_column("")
        for title, rows in self.groups:
            table.add_row(Text(title, style="bold"))
            for row in rows:
                table.add_row(Text(row.keys), Text(row.id), Text(row.description))
        return table
