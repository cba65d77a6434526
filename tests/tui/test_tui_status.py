"""The status bar: fits any width by priority, shows the turn's progress, forgets the last turn."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from dg_chat.tui.widgets.sidebar import ChatListView
from dg_chat.tui.widgets.status import Status
from tests.tui.conftest import SIZE, finished, paused, send, wait_until
from tests.tui.fake_engine import ScriptedEngine

LONG = "The quick brown fox jumps over the lazy dog. " * 10
BUSY = Status(model="diffusiongemma-26b-a4b-it-Q4_K_M", backend="torch", device="cuda:0", tokens_per_second=412.3,
              steps_per_block=13.5, prompt_tokens=1234, thinking=True, state="denoising", block=2, blocks=4, step=13,
              max_steps=32)


@pytest.mark.parametrize("width", [1, 12, 40, 80, 120, 200])
def test_the_status_fits_any_width_keeping_the_most_important_parts(width):
    text = BUSY.text(width)
    assert cell_len(text) <= width
    if width >= 40:
        assert text.startswith("denoising │ block 2/4 · step 13/32")
    if width >= 200:
        assert text == BUSY.text()
        assert text.endswith("prompt 1234 tok │ thinking on")


def test_parts_are_left_out_by_priority_not_cut_in_the_middle():
    assert BUSY.text(80) == "denoising │ block 2/4 · step 13/32 │ diffusiongemma-26b-a4b-it-Q4_K_M"
    assert BUSY.text(120) == ("denoising │ block 2/4 · step 13/32 │ diffusiongemma-26b-a4b-it-Q4_K_M │ torch · cuda:0"
                              " │ 412.3 tok/s │ thinking on")
    assert BUSY.text(12) == "denoising" and BUSY.text(5) == "deno…"


async def test_progress_shows_block_and_the_samplers_step_count_and_resets_per_turn(make_app):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(1, 3))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first", wait=False)
        await paused(pilot, engine)
        status = app.status.status
        assert (status.block, status.blocks, status.step, status.max_steps) == (2, 4, 3, 6)
        assert "block 2/4 · step 3/6" in str(app.status.render())
        engine.resume.set()
        await finished(pilot)
        assert app.status.status.tokens_per_second and app.status.status.block is None
        engine.pause_at = (0, 2)
        engine.resume.clear()
        await send(pilot, "second", wait=False)
        await paused(pilot, engine)
        status = app.status.status
        assert status.tokens_per_second is None and status.steps_per_block is None  # not the last turn's
        assert (status.block, status.step) == (1, 2)


async def test_leaving_the_generating_chat_does_not_leave_it_denoising(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(0, 2))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first chat", wait=False)
        await paused(pilot, engine)
        await pilot.press("ctrl+n")
        await finished(pilot)
        assert app.status.status.state == "ready" and app.status.status.block is None
        assert any("stopped" in n.message for n in app._notifications)


async def test_deleting_the_generating_chat_does_not_leave_it_denoising(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(0, 2))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "doomed", wait=False)
        await paused(pilot, engine)
        chat_list = app.query_one(ChatListView)
        chat_list.focus()
        chat_list.index = 0
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: not store.chats() and not app.generating)
        await pilot.pause()
        assert app.status.status.state == "ready" and "denoising" not in str(app.status.render())
