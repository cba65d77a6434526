"""The status line: model, backend, device, last turn's speed, thinking mode and what the app is doing."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from textual.widgets import Static

from dg_chat.text.sanitize import printable


@dataclass(frozen=True, slots=True)
class Status:
    model: str = "no model"
    backend: str = ""
    device: str = ""
    tokens_per_second: float | None = None
    steps_per_block: float | None = None
    prompt_tokens: int | None = None
    thinking: bool = False
    state: str = "starting"

    def text(self) -> str:
        engine = " · ".join(part for part in (self.model, self.backend, self.device) if part)
        speed = " · ".join(part for part in (
            f"{self.tokens_per_second:.1f} tok/s" if self.tokens_per_second is not None else "",
            f"{self.steps_per_block:.1f} steps/block" if self.steps_per_block is not None else "",
            f"prompt {self.prompt_tokens} tok" if self.prompt_tokens is not None else "",
        ) if part)
        thinking = "thinking on" if self.thinking else "thinking off"
        return " │ ".join(part for part in (self.state, engine, speed, thinking) if part)


class StatusBar(Static):
    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.status = Status()

    def set(self, **fields: Any) -> None:
        self.status = replace(self.status, **fields)
        self.update(printable(self.status.text()), layout=False)  # one line, always
