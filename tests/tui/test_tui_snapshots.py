"""SVG snapshots of the main states (pytest-textual-snapshot; update with --snapshot-update after
looking at the report). Fixed terminal size, animations off, cursor blink off, a deterministic
engine whose stats do not depend on timing."""

from __future__ import annotations

import pytest

from dg_chat.config import Settings
from dg_chat.tui.screens.help import HelpScreen
from dg_chat.tui.screens.model_picker import ModelPicker
from dg_chat.tui.screens.settings import SettingsScreen
from tests.tui.conftest import SIZE, paused, ready, send, wait_until
from tests.tui.fake_engine import ScriptedEngine, failing_factory

CODE_ANSWER = ("Here is a function:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\n"
               "It returns the **sum** of `a` and `b`.")
LONG = "The quick brown fox jumps over the lazy dog. " * 10


async def open_screen(pilot, key: str, screen: type) -> None:
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, screen))


def test_mid_denoise_canvas(snap_compare, make_app):
    engine = ScriptedEngine(lambda m: LONG, canvas_length=64, steps=8, pause_at=(1, 3))

    async def run_before(pilot):
        await send(pilot, "tell me about foxes", wait=False)
        await paused(pilot, engine)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_finished_answer_with_code_block(snap_compare, make_app):
    async def run_before(pilot):
        await send(pilot, "add two numbers in python")

    assert snap_compare(make_app(ScriptedEngine(lambda m: CODE_ANSWER)), terminal_size=SIZE, run_before=run_before)


def test_thinking_shown(snap_compare, make_app):
    settings = Settings()
    settings.sampler.thinking = True

    async def run_before(pilot):
        await send(pilot, "why is the sky blue?")

    app = make_app(ScriptedEngine(lambda m: "Rayleigh scattering."), settings=settings)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_stopped_answer(snap_compare, make_app):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(1, 2))

    async def run_before(pilot):
        await send(pilot, "go on and on", wait=False)
        await paused(pilot, engine)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not pilot.app.generating)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_error_notice(snap_compare, make_app):
    app = make_app(engine_factory=failing_factory("not a GGUF file: /models/broken.gguf (bad magic)"))
    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_settings_screen(snap_compare, make_app):
    async def run_before(pilot):
        await ready(pilot)
        await open_screen(pilot, "ctrl+o", SettingsScreen)

    assert snap_compare(make_app(), terminal_size=(100, 44), run_before=run_before)


@pytest.mark.parametrize("width", [80, 120])
def test_live_canvas_with_end_padding(snap_compare, make_app, width):
    """A short answer on a long canvas: the end positions are quiet cells, hidden past the first
    accepted end token; tokens are never split across lines; the legend shares the title line."""
    engine = ScriptedEngine(lambda m: "Rayleigh scattering makes the sky blue.", canvas_length=256, steps=8,
                            pause_at=(0, 5))

    async def run_before(pilot):
        await send(pilot, "why is the sky blue?", wait=False)
        await paused(pilot, engine)

    assert snap_compare(make_app(engine), terminal_size=(width, 30), run_before=run_before)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_status_bar_mid_turn(snap_compare, make_app, width):
    """The status bar fits by priority: state and progress first, then the model, speed, thinking..."""
    engine = ScriptedEngine(lambda m: LONG)

    async def run_before(pilot):
        await send(pilot, "first")  # its speed is not shown during the next answer
        engine.pause_at = (1, 3)
        await send(pilot, "tell me about foxes", wait=False)
        await paused(pilot, engine)
        # the transcript's scrollbar thumb moves by part of a cell between runs on a busy machine;
        # this snapshot is of the status bar
        pilot.app.chat.transcript.styles.scrollbar_visibility = "hidden"
        await pilot.pause()

    assert snap_compare(make_app(engine), terminal_size=(width, 24), run_before=run_before)


def test_model_picker(snap_compare, make_app):
    async def run_before(pilot):
        await send(pilot, "hello")  # its header names the model that answered
        await open_screen(pilot, "f2", ModelPicker)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare, make_app):
    async def run_before(pilot):
        await ready(pilot)
        await open_screen(pilot, "f1", HelpScreen)

    assert snap_compare(make_app(), terminal_size=(100, 44), run_before=run_before)
