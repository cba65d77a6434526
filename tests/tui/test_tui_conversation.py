"""A whole conversation driven through the app against the scripted engine."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Markdown

from dg_chat.config import Settings
from dg_chat.engine.events import EMPTY_ANSWER, BlockCommitted, PromptEncoded, TurnFailed, TurnFinished
from dg_chat.engine.model_info import ModelInfo
from dg_chat.store import StoreError
from dg_chat.tui.app import DgChatApp
from dg_chat.tui.screens.replay import ReplayScreen
from dg_chat.tui.screens.settings import SettingsScreen
from dg_chat.tui.turns import TurnEvent
from dg_chat.tui.widgets.canvas import CanvasFrame, CanvasView
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.sidebar import ChatListView
from tests.tui.conftest import SIZE, finished, paused, ready, send, wait_until
from tests.tui.fake_engine import ScriptedEngine, failing_factory

LONG = "The quick brown fox jumps over the lazy dog. " * 10  # 91 word tokens + EOS: two 48-token canvases


def views(app) -> list[tuple[str, str, str]]:
    return [(v.role, v.content, v.status) for v in app.query(MessageView)]


def shown_text(view: MessageView) -> str:
    return view.query_one(".message-text", Markdown).source


async def test_send_shows_live_steps_then_the_committed_answer(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(1, 3))
    seen = []
    app = make_app(engine)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await send(pilot, "tell me about foxes", wait=False)
        await paused(pilot, engine)
        canvas = app.query_one(CanvasView)
        assert canvas.display
        assert canvas.render_line(0).text.startswith("block 2 · step 3/6 · mean entropy")
        assert canvas.render_line(1).text.endswith("━ 3/6")
        model = app.query(MessageView).last()
        assert model.status == "generating" and model.content == LONG[:len(model.content)]
        assert 0 < len(model.content) < len(LONG)  # the first block is committed, the second is not

        engine.resume.set()
        await finished(pilot)
        assert not canvas.display
        assert views(app) == [("user", "tell me about foxes", "complete"), ("model", LONG, "complete")]
        assert shown_text(model) == LONG
        status = app.status.status
        assert status.model == "fake-dg" and status.backend == "torch" and status.device == "cpu"
        assert status.tokens_per_second and status.steps_per_block == 6 and status.prompt_tokens
        assert canvas.painted.block == 1 and canvas.painted.step == 6  # the last frame was painted

    events = [type(m.event) for m in seen if isinstance(m, TurnEvent)]
    assert events == [PromptEncoded, BlockCommitted, BlockCommitted, TurnFinished]
    assert sum(isinstance(m, CanvasFrame) for m in seen) >= 2
    stored = store.messages(app.chat_id)
    assert [(m.role, m.content, m.status) for m in stored] == [("user", "tell me about foxes", "complete"),
                                                                ("model", LONG, "complete")]
    assert stored[1].stats["tokens"] == 92
    assert len(store.frames(stored[1].id)) == 2
    asked, _sampler = engine.requests[0]
    assert [(m.role, m.content) for m in asked] == [("user", "tell me about foxes")]


async def test_escape_stops_and_keeps_the_partial_answer(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(1, 2))
    blocks = []
    app = make_app(engine)

    def hook(m):
        if isinstance(m, TurnEvent) and isinstance(m.event, BlockCommitted):
            blocks.append(m.event)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await send(pilot, "go", wait=False)
        await paused(pilot, engine)
        await pilot.press("escape")
        await finished(pilot)
        model = app.query(MessageView).last()
        assert model.status == "stopped" and "stopped" in str(model.query_one(".message-header").render())
        first_block, partial = blocks
        assert LONG.startswith(first_block.answer) and partial.final and partial.steps == 2
        # the block being denoised is kept as its current best guess, after the committed block
        assert model.content == partial.answer and len(partial.answer) > len(first_block.answer)
        assert partial.answer.startswith(first_block.answer) and shown_text(model) == partial.answer
        assert app.status.status.state == "stopped"
    stored = store.messages(app.chat_id)[-1]
    assert (stored.content, stored.status) == (partial.answer, "stopped")
    assert len(store.frames(stored.id)) == 2  # block 1 and the interrupted block 2


async def test_regenerate_replaces_the_last_answer(make_app, store):
    answers = iter(["first answer", "second answer"])
    engine = ScriptedEngine(lambda m: next(answers))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        await pilot.press("ctrl+r")
        await finished(pilot)
        assert views(app) == [("user", "hi", "complete"), ("model", "second answer", "complete")]
    assert [m.content for m in store.messages(app.chat_id)] == ["hi", "second answer"]
    assert [[m.content for m in asked] for asked, _ in engine.requests] == [["hi"], ["hi"]]


async def test_edit_and_resend_the_last_message(make_app, store):
    engine = ScriptedEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await send(pilot, "two")
        await pilot.press("ctrl+g")
        prompt = app.query_one(Prompt)
        assert prompt.text == "two"
        await pilot.press("backspace", "backspace", "backspace", *"2!", "enter")
        await finished(pilot)
        assert views(app)[2:] == [("user", "2!", "complete"), ("model", "You said: 2!", "complete")]
    assert [m.content for m in store.messages(app.chat_id)] == ["one", "You said: one", "2!", "You said: 2!"]
    assert [m.content for m in engine.requests[-1][0]] == ["one", "You said: one", "2!"]


async def test_replay_steps_through_every_block(make_app):
    engine = ScriptedEngine(lambda m: LONG)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "replay me")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen))
        replay = app.screen
        canvas = replay.query_one(CanvasView)
        assert (canvas.painted.block, canvas.painted.step) == (0, 1)
        await pilot.press("right", "right")
        assert (canvas.painted.block, canvas.painted.step) == (0, 3)
        await pilot.press("left")
        assert canvas.painted.step == 2
        await pilot.press("down")
        assert (canvas.painted.block, canvas.painted.step) == (1, 1)
        await pilot.press("space")
        assert replay.playing
        await wait_until(pilot, lambda: not replay.playing)  # plays to the end, then pauses
        assert (canvas.painted.block, canvas.painted.step) == (1, 6)
        assert canvas.painted.accepted.all()
        await pilot.press("escape")
        assert not isinstance(app.screen, ReplayScreen)


class ServerEngine(ScriptedEngine):
    """A scripted engine that says it is a model on a server (its canvas pieces are numbered per connection)."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, "openai:http://gpu-box:8000/v1#org/model", "", "openai", "gpu-box:8000")


async def test_an_answer_replays_only_with_the_model_that_wrote_it(make_app):
    other = ScriptedEngine()
    other.name = "other-dg"
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "replay me")
        app.chat.engine = other  # as a model picked with F2 arrives
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: any("written by fake-dg" in n.message for n in app._notifications))
        assert not isinstance(app.screen, ReplayScreen)


async def test_a_servers_answer_replays_only_in_the_session_that_received_it(make_app):
    app = make_app(ServerEngine(lambda m: LONG))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "replay me")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen))

    restarted = make_app(ServerEngine(lambda m: LONG), continue_last=True)
    async with restarted.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: any("only in the session that received it" in n.message
                                            for n in restarted._notifications))
        assert not isinstance(restarted.screen, ReplayScreen)


async def test_switch_chats_then_restart_and_continue(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first chat")
        first = app.chat_id
        await pilot.press("ctrl+n")
        assert views(app) == []
        await send(pilot, "second chat")
        assert app.chat_id != first
        chat_list = app.query_one(ChatListView)
        assert len(chat_list.children) == 2
        chat_list.focus()
        chat_list.index = 1  # most recent first: the first chat is second
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat_id == first)
        assert [v[1] for v in views(app)] == ["first chat", "You said: first chat"]

    restarted = make_app(continue_last=True)
    async with restarted.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert [v[1] for v in views(restarted)] == ["second chat", "You said: second chat"]
        assert len(restarted.query_one(ChatListView).children) == 2


async def test_thinking_toggle_is_per_chat_and_shown(make_app, store):
    engine = ScriptedEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "think first")
        await pilot.press("ctrl+t")
        await send(pilot, "now think")
        assert engine.requests[0][1].thinking is False and engine.requests[1][1].thinking is True
        model = app.query(MessageView).last()
        assert model.thinking.startswith("First I read")
        assert model.query_one(".thinking").display
        assert app.status.status.thinking
    assert store.chat_settings(app.chat_id).sampler.thinking is True
    assert store.messages(app.chat_id)[-1].thinking == model.thinking


@pytest.mark.parametrize("thinks, title, message", [
    (True, "", "Thinking on for this chat"),
    (False, "Thinking on for this chat", "fake-dg has no thinking channel: it answers without thinking first"),
])
async def test_turning_thinking_on_warns_when_the_model_has_no_thinking_channel(make_app, thinks, title, message):
    engine = ScriptedEngine()
    engine.thinks = thinks
    app = make_app(engine)
    notices = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.notify = lambda text, **kw: notices.append((kw.get("title"), text))  # type: ignore[method-assign]
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: notices)
    assert notices == [(title, message)]


async def test_settings_screen_edits_the_chat_sampler(make_app, store):
    engine = ScriptedEngine()
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#setting-max_steps").value = "zero"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, SettingsScreen)
        assert "max_steps" in str(app.screen.query_one("#settings-error").render())
        app.screen.query_one("#setting-max_steps").value = "3"
        app.screen.query_one("#setting-seed").value = "42"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await send(pilot, "again")
    sampler = engine.requests[-1][1]
    assert (sampler.max_steps, sampler.seed) == (3, 42)
    assert store.chat_settings(app.chat_id).sampler.max_steps == 3
    assert store.messages(app.chat_id)[-1].stats["steps"] == [3]


async def test_copy_a_message_and_its_code_blocks(make_app):
    reply = "Two blocks:\n\n```python\nprint(1)\n```\n\nand\n\n```sh\necho 2\n```\n"
    app = make_app(ScriptedEngine(lambda m: reply))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "code please")
        app.query(MessageView).last().focus()
        await pilot.press("c")
        assert app.clipboard == reply
        await pilot.press("y")
        assert app.clipboard == "print(1)\n"
        await pilot.press("y")
        assert app.clipboard == "echo 2\n"
        await pilot.press("up")
        assert app.focused.role == "user"


async def test_keymap_remaps_bindings_by_id(make_app):
    settings = Settings()
    settings.ui.keymap = {"regenerate": "f9", "no-such-binding": "f10"}
    engine = ScriptedEngine()
    app = make_app(engine, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        assert any("no-such-binding" in n.message for n in app._notifications)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert len(engine.requests) == 1
        await pilot.press("f9")
        await finished(pilot)
        assert len(engine.requests) == 2


async def test_a_model_that_cannot_load_leaves_the_app_usable(make_app, store):
    app = make_app(engine_factory=failing_factory())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "anyone there?", wait=False)
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert "model file not found: /models/missing.gguf" in messages
        assert any("No model to answer with" in m for m in messages)
        assert app.query_one(Prompt).text == "anyone there?"  # nothing typed is lost
        assert app.status.status.state == "no model loaded"
        await pilot.press("ctrl+n", "ctrl+b")
        assert not app.query_one("#sidebar").display
    assert store.chats() == []


async def test_a_failing_turn_keeps_what_was_committed(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, fail_in_block=1)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "fail please")
        model = app.query(MessageView).last()
        assert model.status == "failed" and LONG.startswith(model.content) and model.content
        assert any("CUDA out of memory" in n.message for n in app._notifications)
        engine.fail_in_block = None
        await send(pilot, "again")  # still usable
        assert app.query(MessageView).last().content == LONG
    stored = store.messages(app.chat_id)
    assert stored[1].status == "failed" and stored[1].error.startswith("CUDA out of memory")
    assert stored[1].content == model.content


async def test_an_engine_crash_is_reported_and_stored(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, crash_in_block=0)
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "crash")
        assert app.query(MessageView).last().status == "failed"
        assert any("RuntimeError: fake engine crashed" in n.message for n in app._notifications)
    assert store.messages(app.chat_id)[-1].error == "RuntimeError: fake engine crashed"


async def test_rename_search_and_delete_chats(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "apples")
        await pilot.press("ctrl+n")
        await send(pilot, "pears")
        chat_list = app.query_one(ChatListView)
        chat_list.focus()
        chat_list.index = 0
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one("#dialog-input").value = "Fruit talk"
        await pilot.press("enter")
        await wait_until(pilot, lambda: store.chat(app.chat_id).title == "Fruit talk")

        await pilot.press("ctrl+f", *"appl")
        await wait_until(pilot, lambda: len(chat_list.children) == 1)
        assert chat_list.children[0].chat.title == "apples"
        await pilot.press("enter")  # to the results: the first is highlighted, though not the open chat
        assert app.focused is chat_list and chat_list.index == 0
        await pilot.press("enter")
        await wait_until(pilot, lambda: store.chat(app.chat_id).title == "apples")
        app.query_one("#chat-search").value = ""
        await wait_until(pilot, lambda: len(chat_list.children) == 2)

        chat_list.focus()
        chat_list.index = [item.chat.id for item in chat_list.children].index(app.chat_id)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: len(chat_list.children) == 1)
        assert app.chat_id is None and views(app) == []  # the open chat was deleted
    assert len(store.chats()) == 1  # once out of the trash


async def test_export_writes_markdown_and_json(make_app, tmp_path):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "export me")
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("enter")  # the folder asked for: the one given
        await pilot.pause()
    markdown = (tmp_path / f"dg-chat-{app.chat_id}-export-me.md").read_text()
    assert "## You\n\n```text\nexport me\n```" in markdown
    assert "## Model · fake-dg Q4_K_M · torch/cpu\n\n```text\nYou said: export me\n```" in markdown  # who answered
    data = json.loads((tmp_path / f"dg-chat-{app.chat_id}-export-me.json").read_text())
    assert [m["content"] for m in data["messages"]] == ["export me", "You said: export me"]
    assert data["messages"][1]["model"] == {"name": "fake-dg", "file": "/models/fake-dg-Q4_K_M.gguf",
                                            "quant": "Q4_K_M", "backend": "torch", "device": "cpu"}


async def test_a_second_message_waits_for_the_running_answer(make_app):
    engine = ScriptedEngine(pause_at=(0, 2))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first", wait=False)
        await paused(pilot, engine)
        await send(pilot, "second", wait=False)
        assert len(engine.requests) == 1 and app.query_one(Prompt).text == "second"
        assert any("being generated" in n.message for n in app._notifications)
        engine.resume.set()
        await finished(pilot)
        await pilot.press("enter")  # the kept text goes out once the first answer is done
        await finished(pilot)
    assert [asked[-1].content for asked, _ in engine.requests] == ["first", "second"]


async def test_turn_failed_event_from_the_engine_is_final(make_app):
    engine = ScriptedEngine(lambda m: "short", fail_in_block=0)
    seen = []
    app = make_app(engine)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await send(pilot, "x")
    assert [type(m.event) for m in seen if isinstance(m, TurnEvent)] == [PromptEncoded, TurnFailed]


async def test_quitting_mid_answer_stores_it_as_stopped(make_app, store):
    engine = ScriptedEngine(lambda m: LONG, pause_at=(1, 2))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "bye soon", wait=False)
        await paused(pilot, engine)
        await pilot.press("ctrl+q")
    user, model = store.messages(app.chat_id)
    assert user.content == "bye soon"
    first_block = " ".join(LONG.split(" ")[:48])
    assert model.status == "stopped" and model.content.startswith(first_block)
    assert len(model.content) > len(first_block)  # and the stopped block's best guess
    assert engine.closed


async def test_a_history_write_error_is_a_notice_and_keeps_the_prompt(make_app, store, monkeypatch):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        def locked(*args, **kwargs):
            raise StoreError("history database error: database is locked")

        monkeypatch.setattr(store, "add_message", locked)
        await send(pilot, "important words", wait=False)
        await pilot.pause()
        assert "history database error: database is locked" in [n.message for n in app._notifications]
        assert app.query_one(Prompt).text == "important words" and not app.generating
        monkeypatch.undo()
        await pilot.press("enter")
        await finished(pilot)
        assert views(app)[0] == ("user", "important words", "complete")


async def test_an_edit_that_cannot_be_stored_keeps_the_old_exchange_and_the_edit(make_app, store):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await pilot.press("ctrl+g", "backspace", "backspace", "backspace", *"1!")
        store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        await pilot.press("enter")
        await pilot.pause()
        assert any("disk full" in n.message for n in app._notifications)
        assert app.query_one(Prompt).text == "1!" and not app.generating
        assert views(app) == [("user", "one", "complete"), ("model", "You said: one", "complete")]
        assert [m.content for m in store.messages(app.chat_id)] == ["one", "You said: one"]
        store._db.execute("DROP TRIGGER refuse")
        await pilot.press("enter")  # still editing: the retry replaces the exchange
        await finished(pilot)
        assert views(app) == [("user", "1!", "complete"), ("model", "You said: 1!", "complete")]
    assert [m.content for m in store.messages(app.chat_id)] == ["1!", "You said: 1!"]


async def test_settings_screen_offers_the_mask_algorithms(make_app, store):
    engine = ScriptedEngine()
    engine.backend.noise = "mask"  # the algorithm is a knob of mask-token models only
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#setting-algorithm").value = "entropy"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await send(pilot, "hi")
    sampler = engine.requests[-1][1]
    assert sampler.algorithm == "entropy"
    assert store.chat_settings(app.chat_id).sampler.algorithm == "entropy"


async def test_first_run_offers_the_demo_then_starts_it(store, tmp_path, monkeypatch):
    from dg_chat import hub
    from dg_chat.tui.screens.first_run import FirstRunScreen
    from tests.tui.fake_engine import factory

    demo = tmp_path / "demo.gguf"
    demo.write_bytes(b"GGUF")  # the scripted engine never reads it; the screen only checks it exists
    monkeypatch.setattr(hub, "demo_file", lambda: demo)
    loaded_with = []

    def engine_factory(settings):
        loaded_with.append(settings.model)
        return factory(ScriptedEngine())(settings)

    app = DgChatApp(Settings(), store=store, engine_factory=engine_factory, export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        assert not loaded_with  # nothing loads before the user chooses
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is not None)
    assert loaded_with == ["demo"] and hub.recorded_choice() == "demo"


async def test_the_apps_keys_do_not_act_behind_the_first_run_screen(store, tmp_path, monkeypatch):
    from dg_chat import hub
    from dg_chat.tui.screens.first_run import FirstRunScreen
    from tests.tui.fake_engine import factory

    demo = tmp_path / "demo.gguf"
    demo.write_bytes(b"GGUF")
    monkeypatch.setattr(hub, "demo_file", lambda: demo)
    app = DgChatApp(Settings(), store=store, engine_factory=factory(ScriptedEngine()), export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        thinking = app.chat_settings.sampler.thinking
        await pilot.press("f2", "ctrl+s", "ctrl+o", "ctrl+f", "ctrl+t", "ctrl+r", "ctrl+n")
        assert isinstance(app.screen, FirstRunScreen) and len(app.screen_stack) == 2  # no picker, export, ...
        palette = {command.title for command in app.get_system_commands(app.screen)}
        assert "Quit" in palette and not {"Model", "Thinking", "Export"} & palette  # nor from the palette
        assert app.chat_settings.sampler.thinking == thinking and not app._notifications
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is not None)
        assert isinstance(app.focused, Prompt)  # not the chat search box


async def test_an_answer_the_model_ended_without_text_says_so_and_stays_in_the_context(make_app, store):
    replies = iter(["", "now with words"])
    engine = ScriptedEngine(lambda m: next(replies))
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first")
        model = app.query(MessageView).last()
        assert (model.content, model.status) == ("", "complete")
        assert shown_text(model) == f"*{EMPTY_ANSWER}*"
        await send(pilot, "second")
    asked, _sampler = engine.requests[1]
    assert [(m.role, m.content) for m in asked] == [("user", "first"), ("model", ""), ("user", "second")]
    assert [(m.content, m.status) for m in store.messages(app.chat_id)][1] == ("", "complete")

    reopened = make_app(continue_last=True)
    async with reopened.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert shown_text(reopened.query(MessageView)[1]) == f"*{EMPTY_ANSWER}*"
