"""The per-chat settings: the sampler knobs of the loaded model's family and the system prompt.

Each knob has a human label and unit (`FIELDS`); its help text is the attribute docstring of
`SamplerSettings`. Values are checked by `settings_from_dict`, the same validation as the config
file. Saving applies to this chat only, or also makes them the defaults of new chats.
"""

from __future__ import annotations

import ast
import copy
import inspect
import textwrap
from dataclasses import dataclass, fields
from typing import Literal, get_args, get_origin

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, Switch, TextArea

from dg_chat.config import LEAF_TYPES, ConfigError, SamplerSettings, Settings, settings_from_dict, settings_to_dict
from dg_chat.config_file import TomlValue
from dg_chat.engine.turn_engine import Noise
from dg_chat.text.sanitize import printable


@dataclass(frozen=True)
class Field:
    label: str
    unit: str = ""


COMMON = {
    "max_steps": Field("Steps per block", "steps"),
    "max_canvases": Field("Blocks per answer", "blocks"),
    "seed": Field("Random seed", "empty: new each answer"),
    "thinking": Field("Think before answering"),
}
UNIFORM = {  # DiffusionGemma: canvases start as random tokens
    "t_max": Field("Temperature, first step"),
    "t_min": Field("Temperature, last step"),
    "entropy_bound": Field("Entropy accepted per step", "nats"),
    "stability": Field("Stable steps to stop early", "steps"),
    "confidence": Field("Entropy to stop early", "nats"),
    "reference_draws": Field("Reference random draws"),
}
MASK = {  # Dream, LLaDA, RND1: canvases start as mask tokens
    "algorithm": Field("Unmasking order"),
    "temperature": Field("Temperature", "0: greedy"),
    "top_p": Field("Top-p", "1: off"),
    "top_k": Field("Top-k", "tokens, 0: off"),
    "alg_temp": Field("Unmasking temperature (Dream)"),
    "eps": Field("Schedule end (Dream)"),
}
FAMILY_TITLES: dict[Noise, str] = {"uniform": "DiffusionGemma sampler",
                                   "mask": "Mask-model sampler (Dream, LLaDA, RND1)"}
FAMILY_FIELDS: dict[Noise, dict[str, Field]] = {"uniform": UNIFORM, "mask": MASK}


def family_fields(noise: Noise | None) -> dict[str, Field]:
    """The knobs that act on a model whose canvases start as `noise` (None: unknown, all of them)."""
    family = FAMILY_FIELDS[noise] if noise is not None else {**UNIFORM, **MASK}
    return {**COMMON, **family}


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


@dataclass(frozen=True)
class SettingsChoice:
    settings: Settings
    as_default: bool
    """Also the defaults of new chats (saved in the config file)."""


class SettingsScreen(ModalScreen[SettingsChoice | None]):
    """Returns the new settings and where they apply, or None if cancelled."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="settings-cancel"),
        Binding("ctrl+s", "save(False)", "This chat", id="settings-save"),
        # priority: a focused Input takes ctrl+d as "delete right"
        Binding("ctrl+d", "save(True)", "Save as default", id="settings-save-default", priority=True),
    ]

    def __init__(self, settings: Settings, noise: Noise | None = None) -> None:
        super().__init__(classes="dialog")
        self.settings = settings
        self.fields = family_fields(noise)
        self.title_text = FAMILY_TITLES[noise] if noise is not None else "Sampler settings"

    def compose(self) -> ComposeResult:
        docs = field_docs(SamplerSettings)
        with Vertical(classes="dialog-box", id="settings-box"):
            yield Static(f"{self.title_text} · this chat", classes="dialog-title")
            with VerticalScroll(id="settings-fields"):
                for name, spec in self.fields.items():
                    with Horizontal(classes="setting"):
                        yield Label(spec.label, classes="setting-name")
                        yield self._editor(name, getattr(self.settings.sampler, name))
                        yield Label(spec.unit, classes="setting-unit")
                    yield Static(docs.get(name, ""), classes="setting-help", markup=False)
                yield Label("System prompt", classes="setting-name")
                yield TextArea(printable(self.settings.system_prompt), id="setting-system_prompt", compact=True)
            yield Static("", id="settings-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("This chat (ctrl+s)", id="save", variant="primary")
                yield Button("Save as default (ctrl+d)", id="save-default")
                yield Button("Cancel (esc)", id="cancel")

    @staticmethod
    def _editor(name: str, value: object) -> Input | Select | Switch:
        if isinstance(value, bool):
            return Switch(value, id=f"setting-{name}")
        if get_origin(LEAF_TYPES[name]) is Literal:  # a fixed choice (algorithm): its values, from its type
            return Select([(a, a) for a in get_args(LEAF_TYPES[name])], value=value, allow_blank=False,
                          id=f"setting-{name}", compact=True)
        return Input("" if value is None else str(value), id=f"setting-{name}", compact=True)

    def on_mount(self) -> None:
        self.query_one(f"#setting-{next(iter(self.fields))}").focus()

    def collect(self) -> Settings:
        """The settings as edited; raises ConfigError for a bad value."""
        data = settings_to_dict(copy.deepcopy(self.settings))
        for name in self.fields:
            widget = self.query_one(f"#setting-{name}")
            if isinstance(widget, Input):
                data["sampler"][name] = widget.value.strip()
            elif isinstance(widget, (Select, Switch)):
                data["sampler"][name] = widget.value
        data["system_prompt"] = self.query_one("#setting-system_prompt", TextArea).text
        return settings_from_dict(data)

    def action_save(self, as_default: bool) -> None:
        try:
            self.dismiss(SettingsChoice(self.collect(), as_default))
        except ConfigError as exc:
            self.query_one("#settings-error", Static).update(str(exc))

    @on(Button.Pressed, "#save")
    def _save(self) -> None:
        self.action_save(False)

    @on(Button.Pressed, "#save-default")
    def _save_default(self) -> None:
        self.action_save(True)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


def defaults_to_save(chosen: Settings, of_run: Settings,
                     saved: Settings) -> tuple[dict[str | None, dict[str, TomlValue]], list[str]]:
    """What "save as default" writes to the config file: each sampler setting and the system prompt
    whose `chosen` value differs from what the file (or the default) gives (`saved`). A value that
    this run took from a flag or the environment (`of_run` differs from `saved`) is written only
    if it was changed: a flag lasts one run. Returns (the sections to write, the names held back)."""
    leaves = [(None, "system_prompt"), *(("sampler", f.name) for f in fields(SamplerSettings))]
    sections: dict[str | None, dict[str, TomlValue]] = {None: {}, "sampler": {}}
    held = []
    for section, name in leaves:
        value, of_run_value, saved_value = (getattr(s.sampler if section else s, name) for s in (chosen, of_run, saved))
        if value == saved_value:
            continue
        if value == of_run_value:
            held.append(name)
        else:
            sections[section][name] = value
    return sections, held
