"""The live canvas: rendering of a frame, coalescing of queued frames, repaint rate, last frame."""

from __future__ import annotations

import numpy as np
from textual.app import App, ComposeResult
from textual.message import Message

from dg_chat.tui.recording import Frame
from dg_chat.tui.widgets.canvas import MASK_GLYPH, CanvasFrame, CanvasView, frame_header, token_runs, wrap_runs
from tests.tui.conftest import wait_until


def frame(step: int, length: int = 8) -> Frame:
    tokens = np.arange(length, dtype=np.int32) + step
    accepted = np.arange(length) < step
    return Frame(0, step, 48, 0.5, tokens, accepted, accepted & (np.arange(length) == step - 1))


def test_tokens_are_styled_noise_accepted_changed_or_mask():
    f = Frame(1, 7, 48, 1.23456, np.array([10, 11, 12, 99], np.int32), np.array([True, True, False, False]),
              np.array([False, True, False, False]))
    assert token_runs(f, lambda t: f" tok{t}", mask_id=99) == [
        (" tok10", "accepted"), (" tok11", "changed"), (" tok", "noise"), (MASK_GLYPH, "noise")]
    assert frame_header(f) == "block 2 · step 7/48 · mean entropy 1.235"


def test_runs_wrap_at_the_width_in_cells():
    runs = [("abc", "a"), ("defgh", "b"), ("日本", "c"), ("x", "d")]
    lines = [[(s.text, s.style) for s in line] for line in wrap_runs(runs, 4, height=10)]
    assert lines == [[("abc", "a"), ("d", "b")], [("efgh", "b")], [("日本", "c")], [("x", "d")]]
    assert [[(s.text, s.style) for s in line] for line in wrap_runs(runs, 4, height=2)] == lines[:2]


def test_queued_frames_replace_each_other_but_not_other_messages():
    a, b = CanvasFrame(1, frame(1)), CanvasFrame(1, frame(2))
    assert a.can_replace(b)
    assert not a.can_replace(Message())


class CanvasApp(App[None]):
    def __init__(self, fps: int) -> None:
        super().__init__()
        self.fps = fps

    def compose(self) -> ComposeResult:
        yield CanvasView(fps=self.fps, piece=lambda t: f"<{t}>")


async def test_repaints_are_capped_and_the_last_frame_is_always_painted():
    app = CanvasApp(fps=4)
    async with app.run_test() as pilot:
        canvas = app.query_one(CanvasView)
        painted = []
        original = canvas.paint
        canvas.paint = lambda f: (painted.append(f.step), original(f))
        for step in range(1, 41):
            canvas.show(frame(step))
        assert painted == [1]  # the first frame at once, the rest waits for the frame interval
        await wait_until(pilot, lambda: painted[-1] == 40)
        assert painted == [1, 40]  # frames 2..39 were superseded before their turn came
        assert canvas.painted.step == 40
        assert canvas.render_line(1).text.rstrip().endswith(" 40/48")
        assert canvas.render_line(2).text.startswith("<40><41>")


async def test_frames_of_another_turn_are_ignored():
    app = CanvasApp(fps=30)
    async with app.run_test() as pilot:
        canvas = app.query_one(CanvasView)
        canvas.start(2)
        canvas.post_message(CanvasFrame(1, frame(3)))
        canvas.post_message(CanvasFrame(2, frame(5)))
        await wait_until(pilot, lambda: canvas.painted is not None)
        assert canvas.painted.step == 5
        canvas.stop()
        canvas.post_message(CanvasFrame(2, frame(6)))
        await pilot.pause(0.1)
        assert canvas.painted.step == 5


def test_wrapping_never_exceeds_the_height_even_when_nothing_fits():
    assert len(wrap_runs([("日本語", "a")], 1, height=3)) <= 3
    assert wrap_runs([("abc", "a")], 10, height=0) == []
