"""The per-chat settings: every sampler knob of `SamplerSettings` and the system prompt.

Fields, types and help texts come from the dataclass itself (its attribute docstrings), so a
new knob appears here without touching this file. Values are checked by
`settings_from_dict`, the same validation as the config file.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from dataclasses import fields

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, Switch, TextArea

from dg_chat.config import MASK_ALGORITHMS, ConfigError, SamplerSettings, Settings, settings_from_dict, settings_to_dict


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string right after each field)."""
    try:
        body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    except (OSError, TypeError):
        return {}
    return {node.target.id: " ".join(doc.value.value.split())
            for node, doc in zip(body, body[1:], strict=False)
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)}


class SettingsScreen(ModalScreen[Settings | None]):
    """Returns the new settings, or None if cancelled."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="settings-cancel"),
        Binding("ctrl+s", "save", "Save", id="settings-save"),
    ]

    def __init__(self, settings: Settings) -> None:
        super().__init__(classes="dialog")
        self.settings = settings

    def compose(self) -> ComposeResult:
        docs = field_docs(SamplerSettings)
        with Vertical(classes="dialog-box", id="settings-box"):
            yield Static("Settings of this chat (saved with it)", classes="dialog-title")
            with VerticalScroll(id="settings-fields"):
                for f in fields(SamplerSettings):
                    value = getattr(self.settings.sampler, f.name)
                    with Horizontal(classes="setting"):
                        yield Label(f.name, classes="setting-name")
                        if isinstance(value, bool):
                            yield Switch(value, id=f"setting-{f.name}")
                        elif f.name == "algorithm":
                            yield Select([(name, name) for name in MASK_ALGORITHMS], value=value, allow_blank=False,
                                         id=f"setting-{f.name}", compact=True)
                        else:
                            yield Input("" if value is None else str(value), id=f"setting-{f.name}", compact=True)
                    yield Static(docs.get(f.name, ""), classes="setting-help", markup=False)
                yield Label("system_prompt", classes="setting-name")
                yield TextArea(self.settings.system_prompt, id="setting-system_prompt", compact=True)
            yield Static("", id="settings-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def collect(self) -> Settings:
        """The settings as edited; raises ConfigError for a bad value."""
        data = settings_to_dict(copy.deepcopy(self.settings))
        for f in fields(SamplerSettings):
            widget = self.query_one(f"#setting-{f.name}")
            data["sampler"][f.name] = widget.value.strip() if isinstance(widget, Input) else widget.value
        data["system_prompt"] = self.query_one("#setting-system_prompt", TextArea).text
        return settings_from_dict(data)

    def action_save(self) -> None:
        try:
            self.dismiss(self.collect())
        except ConfigError as exc:
            self.query_one("#settings-error", Static).update(str(exc))

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
