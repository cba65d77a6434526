"""Replay of a recorded answer: every denoising step of every block, played or stepped through."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Static

from dg_chat.recording import Frame
from dg_chat.tui.widgets.canvas import CanvasView

STEPS_PER_SECOND = 8


class ReplayScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("space", "play_pause", "Play/pause", id="replay-play"),
        Binding("left", "step(-1)", "Step back", id="replay-back"),
        Binding("right", "step(1)", "Step forward", id="replay-forward"),
        Binding("up", "block(-1)", "Previous block", id="replay-previous-block"),
        Binding("down", "block(1)", "Next block", id="replay-next-block"),
        Binding("escape,q", "dismiss(None)", "Close", id="replay-close"),
    ]

    def __init__(self, blocks: list[list[Frame]], piece: Callable[[int], str], mask_id: int | None,
                 end_ids: frozenset[int] = frozenset()) -> None:
        super().__init__(classes="dialog")
        self.blocks = [frames for frames in blocks if frames]
        self.block = 0
        self.step = 0
        self._piece = piece
        self._mask_id = mask_id
        self._end_ids = end_ids
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="replay-box"):
            yield Static("Replay", classes="dialog-title")
            yield CanvasView(piece=self._piece, mask_id=self._mask_id, end_ids=self._end_ids, id="replay-canvas")
            yield Static("", id="replay-position", markup=False)
            yield Static("space: play/pause · ←/→: step · ↑/↓: block · esc: close", classes="hint")

    def on_mount(self) -> None:
        self._show()

    @property
    def playing(self) -> bool:
        return self._timer is not None

    def _show(self) -> None:
        frames = self.blocks[self.block]
        self.query_one(CanvasView).paint(frames[self.step])
        state = "playing" if self.playing else "paused"
        self.query_one("#replay-position", Static).update(
            f"block {self.block + 1}/{len(self.blocks)} · frame {self.step + 1}/{len(frames)} · {state}")

    def action_play_pause(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        else:
            if self._at_end():
                self.block = self.step = 0
            self._timer = self.set_interval(1 / STEPS_PER_SECOND, self._advance)
        self._show()

    def _at_end(self) -> bool:
        return self.block == len(self.blocks) - 1 and self.step == len(self.blocks[-1]) - 1

    def _advance(self) -> None:
        if self._at_end():
            self.action_play_pause()
        else:
            self.action_step(1)

    def action_step(self, delta: int) -> None:
        """Move one step, crossing into the neighbouring block at either end."""
        step = self.step + delta
        if step < 0 and self.block > 0:
            self.block -= 1
            step = len(self.blocks[self.block]) - 1
        elif step >= len(self.blocks[self.block]) and self.block < len(self.blocks) - 1:
            self.block += 1
            step = 0
        self.step = max(0, min(step, len(self.blocks[self.block]) - 1))
        self._show()

    def action_block(self, delta: int) -> None:
        self.block = max(0, min(self.block + delta, len(self.blocks) - 1))
        self.step = 0
        self._show()
