"""The status line: what the app is doing, the turn's progress, the model, the last turn's speed and
the thinking mode. It always fits in one line: parts of lower priority are left out first."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rich.cells import cell_len, set_cell_size
from textual.widgets import Static

from dg_chat.text.sanitize import visible

SEPARATOR = " │ "


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
    block: int | None = None
    """1-based block being denoised (None between turns)."""
    blocks: int | None = None
    """The most blocks the turn may take."""
    step: int | None = None
    max_steps: int | None = None
    """Steps of the block, as the sampler in use counts them."""

    def progress(self) -> str:
        if self.block is None or self.step is None:
            return ""
        blocks = f"/{self.blocks}" if self.blocks else ""
        return f"block {self.block}{blocks} · step {self.step}/{self.max_steps}"

    def parts(self) -> list[tuple[int, str]]:
        """(priority, text) in display order; 0 is the most important."""
        return [
            (0, self.state),
            (1, self.progress()),
            (2, self.model),
            (5, " · ".join(part for part in (self.backend, self.device) if part)),
            (3, f"{self.tokens_per_second:.1f} tok/s" if self.tokens_per_second is not None else ""),
            (6, f"{self.steps_per_block:.1f} steps/block" if self.steps_per_block is not None else ""),
            (7, f"prompt {self.prompt_tokens} tok" if self.prompt_tokens is not None else ""),
            (4, "thinking on" if self.thinking else "thinking off"),
        ]

    def text(self, width: int | None = None) -> str:
        """The status in at most `width` cells (all of it if None): the least important parts
        are dropped until it fits, then what is left is cut with an ellipsis."""
        parts = [(priority, visible(text)) for priority, text in self.parts() if text]
        line = SEPARATOR.join(text for _, text in parts)
        while width is not None and cell_len(line) > width and len(parts) > 1:
            parts.remove(max(parts, key=lambda part: part[0]))
            line = SEPARATOR.join(text for _, text in parts)
        if width is not None and cell_len(line) > width:
            line = set_cell_size(line, max(width - 1, 0)) + "…" if width else ""
        return line


class StatusBar(Static):
    def __init__(self, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.status = Status()

    def set(self, **fields: Any) -> None:
        self.status = replace(self.status, **fields)
        self._show()

    def new_turn(self, blocks: int) -> None:
        """Forget the previous turn's speed and progress."""
        self.set(state="encoding the prompt", tokens_per_second=None, steps_per_block=None, prompt_tokens=None,
                 block=None, blocks=blocks, step=None, max_steps=None)

    def end_turn(self, state: str, **fields: Any) -> None:
        self.set(state=state, block=None, step=None, max_steps=None, **fields)

    def on_resize(self) -> None:
        self._show()

    def _show(self) -> None:
        width = self.content_size.width
        self.update(self.status.text(width or None), layout=False)  # one line, always
