"""The model picker: the demo, downloaded catalog models, local GGUF files and a configured model on a
server, one per line, and a field to type any spec (a GGUF path, openai:<base-url>#<model>).

Returns the chosen model spec (as `--model` takes it) or None; the app loads it off the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from dg_chat.config import Settings
from dg_chat.engine.remote.spec import EXAMPLE, is_remote, parse_remote
from dg_chat.errors import DgChatError
from dg_chat.hub import gb, local_models
from dg_chat.text.sanitize import printable


@dataclass(frozen=True, slots=True)
class ModelChoice:
    spec: str
    """What `--model` takes: "demo", "NAME:QUANT", a GGUF path or openai:<base-url>#<model>."""
    path: Path | None
    """The GGUF file; None for a model on a server."""
    size: int = 0

    def is_current(self, current: str) -> bool:
        """`current`: the loaded model's file (ModelInfo.file, maybe relative; a server's model: its spec)."""
        if self.path is None:
            return self.spec == current
        return bool(current) and Path(current).expanduser().resolve() == self.path.resolve()

    def label(self, current: str) -> str:
        mark = "● " if self.is_current(current) else "  "
        return printable(f"{mark}{self.spec}  ({gb(self.size) if self.path is not None else 'server'})")


def model_choices(settings: Settings, loaded_file: str = "") -> list[ModelChoice]:
    """The models at hand: the demo, every downloaded catalog quant, and the GGUF files or server
    models configured or loaded now (`settings.model`, `loaded_file`)."""
    choices = [ModelChoice(model.spec, model.path, model.size) for model in local_models(settings)]
    known = {choice.path.resolve() for choice in choices if choice.path is not None}
    for candidate in (settings.model, loaded_file):
        if is_remote(candidate) and all(choice.spec != candidate for choice in choices):
            choices.append(ModelChoice(candidate, None))
        path = Path(candidate).expanduser() if candidate.lower().endswith(".gguf") else None
        if path is not None and path.is_file() and path.resolve() not in known:
            known.add(path.resolve())
            choices.append(ModelChoice(str(path), path, path.stat().st_size))
    return choices


class ModelPicker(ModalScreen[str | None]):
    """Lists the model choices; Enter loads one, Esc keeps the current model."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="model-picker-cancel")]

    def __init__(self, choices: list[ModelChoice], current_file: str = "") -> None:
        super().__init__(classes="dialog")
        self.choices = choices
        self.current_file = current_file

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="model-picker-box"):
            yield Label("Model (Enter: load it · Esc: keep the current one)", classes="dialog-title")
            # Content: a file name such as "[Q4_K_M] model.gguf" is text, not markup
            yield OptionList(*(Option(Content(choice.label(self.current_file)), id=str(index))
                               for index, choice in enumerate(self.choices)), id="model-list")
            if not self.choices:
                yield Label("No model on this machine: dg-chat models pull diffusiongemma", classes="hint")
            yield Label("Download more with: dg-chat models pull NAME", classes="hint")
            yield Label("Or type a GGUF path or a server's model (Tab, then Enter):", classes="hint")
            yield Input(placeholder=EXAMPLE, id="model-spec")

    def on_mount(self) -> None:
        current = next((i for i, c in enumerate(self.choices) if c.is_current(self.current_file)), 0)
        option_list = self.query_one(OptionList)
        option_list.highlighted = current if self.choices else None
        option_list.focus()

    @on(OptionList.OptionSelected)
    def _choose(self, event: OptionList.OptionSelected) -> None:
        choice = self.choices[int(event.option.id or 0)]
        if choice.is_current(self.current_file):  # loading it again would hold it twice, and take as long
            self.notify(f"{choice.spec} is already loaded", markup=False)
            self.dismiss(None)
            return
        self.dismiss(choice.spec)

    @on(Input.Submitted, "#model-spec")
    def _typed(self, event: Input.Submitted) -> None:
        spec = event.value.strip()
        if not spec:
            return
        if is_remote(spec):
            try:
                parse_remote(spec)
            except DgChatError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
        self.dismiss(spec)
