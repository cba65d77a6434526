"""The live canvas: every position of the block being denoised, repainted at most `fps` times a second.

Frames arrive as `CanvasFrame` messages posted to this widget's own queue by the engine
thread; a frame that is still queued when a newer one arrives is dropped (`can_replace`),
so a slow terminal skips frames instead of falling behind. The newest frame received is
always painted. The widget has a fixed height: tokens change every step but nothing around
it moves.

It draws with the line API (precomputed segments per line, no Markdown or Content wrapping):
the UI thread must stay nearly idle, since it shares the GIL with the engine thread.

Tokens are never split across lines (unless one is wider than the canvas); which token shows
as what is dg_chat.text.canvas's `token_runs` (end tokens and lone bytes as quiet cells).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual.message import Message
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget

from dg_chat.recording import Frame
from dg_chat.text.canvas import LEGEND, token_runs
from dg_chat.text.sanitize import visible

HEADER_LINES = 3  # the title line, the step bar and the legend
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


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


def wrap_runs(runs: list[tuple[str, Style]], width: int, height: int) -> list[list[Segment]]:
    """Styled runs laid out in at most `height` lines of `width` cells; a run goes whole to the
    next line when it does not fit, and is broken only if it is wider than a line. What does
    not fit is left out."""
    if height <= 0 or width <= 0:
        return []
    lines: list[list[Segment]] = [[]]
    used = 0
    for text, style in runs:
        for part in chop_cells(text, width) if cell_len(text) > width else [text]:
            size = cell_len(part)
            if used and used + size > width:
                if len(lines) >= height:
                    return lines
                lines.append([])
                used = 0
            line = lines[-1]
            if line and line[-1].style is style:  # fewer, longer segments are cheaper to draw
                line[-1] = Segment(line[-1].text + part, style)
            else:
                line.append(Segment(part, style))
            used += size
    return lines


def legend_line(styles: dict[str, Style]) -> list[Segment]:
    """One line naming what each colour of the canvas means, in that colour."""
    line: list[Segment] = []
    for label, kind in LEGEND:
        if line:
            line.append(Segment("  ", styles["header"]))
        line.append(Segment(label, styles[kind]))
    return line


class CanvasView(Widget):
    """Header, step bar and tokens of one block; shows live frames or replayed ones."""

    class Painted(Message):
        """A frame is on the canvas now (for the status bar's progress)."""

        def __init__(self, canvas: CanvasView, frame: Frame) -> None:
            super().__init__()
            self.canvas = canvas
            self.frame = frame

        @property
        def control(self) -> CanvasView:
            return self.canvas

    COMPONENT_CLASSES = {"canvas--header", "canvas--bar", "canvas--bar-todo", "canvas--noise",
                         "canvas--accepted", "canvas--changed", "canvas--quiet"}
    DEFAULT_CSS = """
    CanvasView {
        height: 14;
        & > .canvas--header { color: $text-muted; }
        & > .canvas--bar { color: $primary; }
        & > .canvas--bar-todo { color: $panel-lighten-2; }
        & > .canvas--noise { color: $text-disabled; }
        & > .canvas--accepted { color: $text; text-style: bold; }
        & > .canvas--changed { color: $warning; text-style: bold underline; }
        & > .canvas--quiet { color: $text-disabled; text-style: dim; }
    }
    """

    def __init__(self, *, piece: Callable[[int], str] = str, mask_id: int | None = None,
                 end_ids: frozenset[int] = frozenset(), fps: int = 30, id: str | None = None) -> None:
        self._style_cache: dict[str, Style] | None = None
        super().__init__(id=id)
        self.set_vocabulary(piece, mask_id, end_ids)
        self._interval = 1.0 / fps
        self.turn: int | None = None
        self.painted: Frame | None = None
        self._title = ""
        self._pending: Frame | None = None
        self._last_paint = 0.0
        self._timer: Timer | None = None
        self._lines: list[Strip] = []
        self._block_done = False
        """The painted frame's block has committed (it may have stopped before its last step)."""
        self._waiting: tuple[int, float] | None = None
        """(block, since when) while a block is awaited without frames (a server that sends whole blocks)."""
        self._spinner: Timer | None = None

    def set_vocabulary(self, piece: Callable[[int], str], mask_id: int | None,
                       end_ids: frozenset[int] = frozenset()) -> None:
        # Pieces repeat across steps and blocks: look each one up (and clean it) once.
        self._piece = lru_cache(maxsize=65536)(lambda token: visible(piece(token)))
        self._mask_id = mask_id
        self._end_ids = end_ids

    def start(self, turn: int) -> None:
        """Accept the frames of `turn` from now on."""
        self.turn = turn
        self._pending = None
        self.painted = None
        self._title = "encoding the prompt…"
        self._stop_waiting()
        self._layout()

    def stop(self) -> None:
        self.turn = None
        self._pending = None
        self._stop_waiting()

    def wait_for_block(self, block: int) -> None:
        """Block `block` is being made but no frame of it is shown: a spinner with its elapsed time
        stands in for the canvas until a frame arrives (or the turn ends)."""
        self._waiting = (block, time.monotonic())
        self._tick()
        if self._spinner is None:
            self._spinner = self.set_interval(1 / len(SPINNER), self._tick)

    def _tick(self) -> None:
        if self._waiting is not None:
            block, since = self._waiting
            elapsed = time.monotonic() - since
            self._title = f"{SPINNER[int(elapsed * len(SPINNER)) % len(SPINNER)]} block {block + 1} · {elapsed:.1f} s"
            self._layout()

    def _stop_waiting(self) -> None:
        self._waiting = None
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None

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
        if frame is not None:
            self.paint(frame)

    def paint(self, frame: Frame) -> None:
        self._stop_waiting()
        self._last_paint = time.monotonic()
        self.painted = frame
        self._block_done = False
        self._title = frame_header(frame)
        self._layout()
        self.post_message(self.Painted(self, frame))

    def finish_block(self, block: int) -> None:
        """Block `block` has committed: if it is the one shown, its step bar is full."""
        if self.painted is not None and self.painted.block == block:
            self._block_done = True
            self._layout()

    def on_resize(self) -> None:
        self._layout()

    def _layout(self) -> None:
        """Lay the current frame out in lines of segments; render_line only hands them out."""
        width, height = self.size
        if not width or not height:
            self._lines = []  # hidden: laid out on the next resize, never shown stale
            return
        style = self.rich_style
        styles = self._styles()
        frame = self.painted
        lines = [[Segment(self._title, styles["header"])]]
        if frame is not None:
            counter = f" {frame.step}/{frame.max_steps}"
            room = max(width - len(counter), 0)
            done = room if self._block_done else room * frame.step // max(frame.max_steps, 1)
            lines.append([Segment("━" * done, styles["bar"]), Segment("━" * (room - done), styles["bar-todo"]),
                          Segment(counter, styles["header"])])
            lines.append(legend_line(styles))
            runs = token_runs(frame, self._piece, self._mask_id, self._end_ids)
            lines += wrap_runs([(text, styles[kind]) for text, kind in runs], width, height - HEADER_LINES)
        self._lines = [Strip(line).adjust_cell_length(width, style) for line in lines]
        self.refresh()

    def _styles(self) -> dict[str, Style]:
        if self._style_cache is None:
            self._style_cache = {name: self.get_component_rich_style(f"canvas--{name}")
                                 for name in ("header", "bar", "bar-todo", "noise", "accepted", "changed", "quiet")}
        return self._style_cache

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._style_cache = None  # the theme or the CSS changed

    def render_line(self, y: int) -> Strip:
        if y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width, self.rich_style)
