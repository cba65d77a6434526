"""The layout adapts to the terminal: the chat list starts hidden under 80 columns."""

from __future__ import annotations

import pytest

from tests.tui.conftest import ready, wait_until
from tests.tui.fake_engine import ScriptedEngine


@pytest.mark.parametrize(("width", "shown"), [(40, False), (79, False), (80, True), (120, True)])
async def test_the_sidebar_collapses_on_narrow_terminals(make_app, width, shown):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=(width, 24)) as pilot:
        await ready(pilot)
        sidebar = app.query_one("#sidebar")
        assert sidebar.display == shown
        await pilot.press("ctrl+b")  # still there on demand
        assert sidebar.display != shown


async def test_single_line_breaks_of_an_answer_are_kept(make_app):
    from textual.widgets import Markdown

    from dg_chat.tui.widgets.message import MessageView
    from tests.tui.conftest import send

    poem = "Roses are red,\nviolets are blue.\n\n```\ncode\nlines\n```"
    app = make_app(ScriptedEngine(lambda m: poem))
    async with app.run_test(size=(100, 34)) as pilot:
        await send(pilot, "a poem")
        markdown = app.query(MessageView).last().query_one(".message-text", Markdown)
        shown = [str(block._content) for block in markdown.children]
    assert shown[0] == "Roses are red,\nviolets are blue."


async def test_the_palette_screenshot_command_saves_an_svg(make_app):
    from dg_chat import paths

    app = make_app(ScriptedEngine())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        [command] = [c for c in app.get_system_commands(app.screen) if c.title == "Screenshot"]
        command.callback()
        await wait_until(pilot, lambda: any("screenshot" in n.message.lower() for n in app._notifications))
        messages = [n.message for n in app._notifications]
    assert any(m.startswith("Saved screenshot to") for m in messages), messages
    [svg] = (paths.data_dir() / "screenshots").glob("*.svg")
    assert svg.read_text().startswith("<svg")
