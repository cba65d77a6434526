"""Below the prompt, before sending: the draft's tokens and how much of the model's context the
chat would fill with it (the prompt and one canvas must fit, as the engine checks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from rich.text import Text
from textual.widgets import Static

from dg_chat.text.chat import Message

if TYPE_CHECKING:
    from dg_chat.engine.engine import Engine

DELAY = 0.15
"""Seconds of quiet typing before the chat is measured again (it is tokenized whole)."""


@dataclass(frozen=True, slots=True)
class DraftSize:
    draft: int
    """Tokens of the draft alone."""
    prompt: int
    """Tokens of the whole prompt the model would read: the chat and the draft."""
    canvas: int
    context: int

    @property
    def fits(self) -> bool:
        return self.prompt + self.canvas <= self.context


def measure(engine: Engine, history: Sequence[Message], draft: str, thinking: bool) -> DraftSize:
    prompt = engine.prompt_ids([*history, Message("user", draft)], thinking)
    backend = engine.backend
    return DraftSize(len(engine.tokenizer.encode(draft)), len(prompt), backend.canvas_length, backend.context_length)


def bar(fraction: float, width: int = 10) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


class ContextGauge(Static):
    def show(self, size: DraftSize | None) -> None:
        self.display = size is not None and size.context > 0  # an empty prompt: no line
        if size is None or size.context <= 0:
            self.update("")
            return
        used = size.prompt + size.canvas
        line = Text(f"{size.draft} tokens · context {bar(used / size.context)} "
                    f"{used:,}/{size.context:,} with one canvas")
        if not size.fits:
            line.append(" · too long for the model: start a new chat or shorten it", style="bold")
        self.set_class(not size.fits, "over")
        self.update(line)
