"""The live canvas: rendering of a frame, coalescing of queued frames, repaint rate, last frame."""

from __future__ import annotations

import numpy as np
from textual.app import App, ComposeResult
from textual.message import Message

from dg_chat.recording import Frame
from dg_chat.text.canvas import BYTE_GLYPH, END_GLYPH, MASK_GLYPH, token_runs
from dg_chat.tui.widgets.canvas import CanvasFrame, CanvasView, frame_header, wrap_runs
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


def test_end_tokens_are_quiet_cells_and_nothing_shows_past_the_first_accepted_one():
    end, byte = 5, 6
    f = Frame(0, 3, 48, 0.1, np.array([10, end, 11, end, 12, 13], np.int32),
              np.array([True, False, True, True, False, True]), np.zeros(6, bool))
    pieces = {10: " a", 11: " b", 12: "noise", 13: " c", end: "<|end|>"}
    assert token_runs(f, pieces.__getitem__, None, frozenset({end})) == [
        (" a", "accepted"), (END_GLYPH, "quiet"), (" b", "accepted"), (END_GLYPH, "quiet")]
    partial = Frame(0, 3, 48, 0.1, np.array([byte, 10], np.int32), np.array([True, True]), np.zeros(2, bool))
    assert token_runs(partial, {byte: "\ufffd", 10: " a"}.__getitem__, None)[0] == (BYTE_GLYPH, "quiet")


def test_runs_wrap_at_the_width_in_cells_without_splitting_a_token():
    runs = [("ab", "a"), (" cd", "b"), (" e", "c"), ("日本", "d")]
    lines = [[(s.text, s.style) for s in line] for line in wrap_runs(runs, 4, height=10)]
    assert lines == [[("ab", "a")], [(" cd", "b")], [(" e", "c")], [("日本", "d")]]
    assert [[(s.text, s.style) for s in line] for line in wrap_runs(runs, 4, height=2)] == lines[:2]
    wide = [[(s.text, s.style) for s in line] for line in wrap_runs([("x", "a"), ("defgh", "b")], 4, height=10)]
    assert wide == [[("x", "a")], [("defg", "b")], [("h", "b")]]  # only a token wider than a line is broken


def test_queued_frames_replace_each_other_but_not_other_messages():
    a, b = CanvasFrame(1, frame(1)), CanvasFrame(1, frame(2))
    assert a.can_replace(b)
    assert not a.can_replace(Message())


class CanvasApp(App[None]):
    def __init__(self, fps: int) -> None:
        super().__init__()
        self.fps = fps

    def compose(self) -> ComposeResult:
        yield CanvasView(fps=self.fps, piece=lambda t: f"<{t}>", end_ids=frozenset({99}))


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
        assert canvas.render_line(3).text.startswith("<40><41>")


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


async def test_a_new_turn_never_shows_the_previous_turns_last_frame():
    app = CanvasApp(fps=30)
    async with app.run_test(size=(60, 14)) as pilot:
        canvas = app.query_one(CanvasView)
        canvas.start(1)
        canvas.paint(frame(5))
        assert "<5>" in canvas.render_line(3).text
        canvas.display = False  # the turn ended
        await pilot.pause()
        canvas.start(2)
        canvas.display = True
        assert all("<" not in canvas.render_line(y).text for y in range(14))
        await pilot.pause()
        assert canvas.render_line(0).text.startswith("encoding the prompt")
        assert all("<" not in canvas.render_line(y).text for y in range(14))


async def test_the_step_bar_is_full_once_a_block_that_stopped_early_commits():
    app = CanvasApp(fps=30)
    async with app.run_test(size=(60, 14)):
        canvas = app.query_one(CanvasView)
        canvas.paint(frame(12))
        assert "━" * 59 not in canvas.render_line(1).text
        canvas.finish_block(1)  # another block: nothing changes
        assert "━" * 59 not in canvas.render_line(1).text
        canvas.finish_block(0)
        assert canvas.render_line(1).text == "━" * 54 + " 12/48"


async def test_a_legend_of_the_colours_follows_the_step_bar():
    app = CanvasApp(fps=30)
    async with app.run_test(size=(60, 14)):
        canvas = app.query_one(CanvasView)
        canvas.paint(frame(3))
        assert canvas.render_line(2).text.rstrip() == f"accepted  changed  noise  {END_GLYPH} end  {BYTE_GLYPH} byte"
        assert canvas.render_line(3).text.startswith("<3><4>")
