"""The live canvas: every position of the block being denoised, repainted at most `fps` times a second.

Frames arrive as `CanvasFrame` messages posted to this widget's own queue by the engine
thread; a frame that is still queued when a newer one arrives is dropped (`can_replace`),
so a slow terminal skips frames instead of falling behind. The last frame received is always
painted. The widget has a fixed height: tokens change every step but nothing around it moves.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.timer import Timer
from textual.widgets import ProgressBar, Static

from dg_chat.tui.recording import Frame
from dg_chat.tui.text import printable

NOISE_CHARS = 4
"""Noise tokens are cut to this many characters: they are shown to look scrambled, not read,
and random vocabulary pieces can be long."""
MASK_GLYPH = "░"

STYLE_NOISE = "dim"
STYLE_ACCEPTED = "bold"
STYLE_CHANGED = "bold $warning underline"


class CanvasFrame(Message, bubble=False):
    """A denoising frame for the canvas of turn `turn`."""

    def __init__(self, turn: int, frame: Frame) -> None:
        super().__init__()
        self.turn = turn
        self.frame = frame

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CanvasFrame)


def frame_header(frame: Frame) -> str:
    return f"block {frame.block + 1} · step {frame.step}/{frame.max_steps} · mean entropy {frame.mean_entropy:.3f}"


def render_tokens(frame: Frame, piece: Callable[[int], str], mask_id: int | None) -> Content:
    """Accepted tokens bright, noise (or mask) dim and cut short, tokens changed this step marked."""
    parts: list[tuple[str, str]] = []
    for token, accepted, changed in zip(frame.tokens.tolist(), frame.accepted.tolist(), frame.changed.tolist()):
        if token == mask_id:
            parts.append((MASK_GLYPH, STYLE_NOISE))
        elif accepted:
            parts.append((piece(token), STYLE_CHANGED if changed else STYLE_ACCEPTED))
        else:
            parts.append((piece(token)[:NOISE_CHARS], STYLE_NOISE))
    return Content.assemble(*parts)


class CanvasView(Vertical):
    """Header, step progress and tokens of one block; shows live frames or replayed ones."""

    def __init__(self, *, piece: Callable[[int], str] = str, mask_id: int | None = None, fps: int = 30,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_vocabulary(piece, mask_id)
        self._interval = 1.0 / fps
        self.turn: int | None = None
        self.painted: Frame | None = None
        self._pending: Frame | None = None
        self._last_paint = 0.0
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="canvas-header", markup=False)
        yield ProgressBar(total=1, show_eta=False, id="canvas-progress")
        yield Static("", id="canvas-tokens", markup=False)

    def set_vocabulary(self, piece: Callable[[int], str], mask_id: int | None) -> None:
        # Pieces repeat across steps and blocks: look each one up (and clean it) once.
        self._piece = lru_cache(maxsize=65536)(lambda token: printable(piece(token)))
        self._mask_id = mask_id

    def start(self, turn: int) -> None:
        """Accept the frames of `turn` from now on."""
        self.turn = turn
        self._pending = None
        self.query_one("#canvas-header", Static).update("encoding the prompt…")
        self.query_one("#canvas-tokens", Static).update("")
        self.query_one(ProgressBar).update(total=1, progress=0)

    def stop(self) -> None:
        self.turn = None
        self._pending = None

    def on_canvas_frame(self, message: CanvasFrame) -> None:
        if message.turn == self.turn:
            self.show(message.frame)

    def show(self, frame: Frame) -> None:
        """Paint `frame` now, or when the frame interval has passed (then the newest one wins)."""
        self._pending = frame
        wait = self._last_paint + self._interval - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = self.set_timer(wait, self.flush)

    def flush(self) -> None:
        """Paint the newest frame received, if it is not painted yet."""
        self._timer = None
        frame, self._pending = self._pending, None
        if frame is None:
            return
        self.paint(frame)

    def paint(self, frame: Frame) -> None:
        self._last_paint = time.monotonic()
        self.painted = frame
        self.query_one("#canvas-header", Static).update(frame_header(frame), layout=False)
        self.query_one(ProgressBar).update(total=frame.max_steps, progress=frame.step)
        self.query_one("#canvas-tokens", Static).update(render_tokens(frame, self._piece, self._mask_id),
                                                        layout=False)
