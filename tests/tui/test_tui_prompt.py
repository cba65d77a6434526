"""The prompt: Ctrl+G (edit the last message) keeps what was typed but not sent."""

from __future__ import annotations

from dg_chat.tui.widgets.prompt import Prompt
from tests.tui.conftest import SIZE, finished, send
from tests.tui.fake_engine import ScriptedEngine


async def test_an_unsent_draft_comes_back_after_an_edit_is_cancelled_or_sent(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        prompt = app.query_one(Prompt)
        await pilot.press(*"half a thought")
        await pilot.press("ctrl+g")
        assert prompt.text == "one"
        await pilot.press("escape")
        assert prompt.text == "half a thought"

        await pilot.press("ctrl+g", "!", "enter")
        await finished(pilot)
        assert [m.content for m in store.messages(app.chat_id)] == ["one!", "You said: one!"]
        assert prompt.text == "half a thought"


async def test_a_prompt_over_the_context_is_rejected_before_it_is_stored(make_app, store):
    engine = ScriptedEngine()
    engine.backend.context_length = 60  # a 48-token canvas leaves room for 12 prompt tokens
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "short")
        too_long = " ".join(["word"] * 40)
        prompt = app.query_one(Prompt)
        prompt.text = too_long
        await pilot.press("enter")
        await pilot.pause()
        assert prompt.text == too_long  # kept to shorten, not lost
        notice = next(n.message for n in app._notifications if n.message.startswith("Not sent: the prompt has"))
        assert notice.endswith("Start a new chat or shorten your message.")
        assert [m.content for m in store.messages(app.chat_id)] == ["short", "You said: short"]
        assert len(engine.requests) == 1
