"""Helpers for driving DgChatApp against the scripted engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Markdown

from dg_chat.config import Settings
from dg_chat.store import Store
from dg_chat.tui.app import DgChatApp
from dg_chat.tui.widgets.canvas import CanvasView
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.prompt import Prompt
from tests.tui.fake_engine import ScriptedEngine, factory

SIZE = (100, 34)


@pytest.fixture
def store() -> Store:
    store = Store()  # in the test's isolated data dir
    yield store
    store.close()


@pytest.fixture
def make_app(store: Store, tmp_path) -> Callable[..., DgChatApp]:
    def make(engine: ScriptedEngine | None = None, *, settings: Settings | None = None,
             engine_factory: Any = None, continue_last: bool = False) -> DgChatApp:
        settings = settings or Settings()
        settings.model = settings.model or "scripted"  # a configured model: no first-run screen
        app = DgChatApp(settings, store=store, engine_factory=engine_factory or factory(engine or ScriptedEngine()),
                        continue_last=continue_last, export_dir=tmp_path)
        app.animation_level = "none"
        return app

    return make


async def wait_until(pilot: Pilot, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until `predicate()` holds (a fixed pause is flaky across machines)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await pilot.pause(0.01)


async def ready(pilot: Pilot) -> None:
    """Wait for the engine to load; freeze the cursor blink (snapshots)."""
    app = pilot.app
    app.query_one(Prompt).cursor_blink = False
    await wait_until(pilot, lambda: app.engine is not None or bool(app.engine_error))


async def send(pilot: Pilot, text: str, *, wait: bool = True) -> None:
    """Type `text` into the prompt, press Enter and (by default) wait for the answer."""
    await ready(pilot)
    prompt = pilot.app.query_one(Prompt)
    prompt.focus()
    prompt.text = text
    await pilot.press("enter")
    if wait:
        await finished(pilot)


async def finished(pilot: Pilot) -> None:
    await wait_until(pilot, lambda: not pilot.app.generating)
    await pilot.pause()


async def paused(pilot: Pilot, engine: ScriptedEngine) -> None:
    """Wait until the engine sits at its pause step, the canvas and the status bar show that step
    and the blocks committed before it are on screen (they travel through another queue)."""
    block, step = engine.pause_at
    canvas = pilot.app.query_one(CanvasView)
    await wait_until(pilot, lambda: engine.paused.is_set() and canvas.painted is not None
                     and (canvas.painted.block, canvas.painted.step) == (block, step))
    # the status bar follows the painted frame through a message of its own
    await wait_until(pilot, lambda: (pilot.app.status.status.block, pilot.app.status.status.step)
                     == (block + 1, step))
    if block:
        answer = pilot.app.query(MessageView).last()
        text = answer.query_one(".message-text", Markdown)
        await wait_until(pilot, lambda: answer.content and text.source == answer.content and text.children)
    await pilot.pause()
