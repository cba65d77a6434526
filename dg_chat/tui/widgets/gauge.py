"""Below the prompt, before sending: the draft's tokens and how much of the model's context the
chat would fill with it (the prompt and one canvas must fit, as the engine checks)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dg_chat.engine.turn_engine import ContextUse

DELAY = 0.15
"""Seconds of quiet typing before the chat is measured again (it is tokenized whole)."""


def bar(fraction: float, width: int = 10) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


class ContextGauge(Static):
    def show(self, size: ContextUse | None) -> None:
        """`size`: of the chat with the draft as its last message (None: not counted here, or no draft)."""
        self.display = size is not None and size.context > 0  # an empty prompt: no line
        if size is None or size.context <= 0:
            self.update("")
            return
        used = size.prompt + size.canvas
        over = "" if size.exact else "≥ "  # lower bounds: a draft too long to be worth counting
        line = Text(f"{over}{size.last_message:,} tokens · context {bar(used / size.context)} "
                    f"{over}{used:,}/{size.context:,} with one canvas")
        if not size.fits:
            line.append(" · too long for the model: start a new chat or shorten it", style="bold")
        self.set_class(not size.fits, "over")
        self.update(line)
