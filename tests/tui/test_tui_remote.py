"""The app on a model served over HTTP (openai:<base-url>#<model>), against the vLLM-style fake
server of tests/support/fake_openai.py: the live canvas through dg-chat's extension, a per-block
spinner without it, stop, regenerate, a cut stream, the model picker, and the API key kept out of
the history and the export."""

from __future__ import annotations

from dg_chat import paths
from dg_chat.config import Settings
from dg_chat.engine.loader import load_engine
from dg_chat.engine.remote.engine import RemoteEngine
from dg_chat.export import export_chat
from dg_chat.recording import decode_block
from dg_chat.tui.screens.model_picker import ModelPicker
from dg_chat.tui.widgets.canvas import CanvasFrame, CanvasView
from dg_chat.tui.widgets.gauge import ContextGauge
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.prompt import Prompt
from tests.support.fake_openai import MODEL, FakeOpenAI, Reply
from tests.tui.conftest import SIZE, finished, ready, send, wait_until

KEY = "sk-tui-8badf00d5eed"


def remote_app(make_app, server: FakeOpenAI):
    settings = Settings(model=server.spec())
    settings.sampler.seed = 1
    return make_app(settings=settings, engine_factory=load_engine)


async def test_an_answer_from_a_server_shows_its_live_canvas_and_is_stored(make_app, store, server):
    frames = []
    app = remote_app(make_app, server)

    def hook(m):
        if isinstance(m, CanvasFrame):
            frames.append(m.frame)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await send(pilot, "Why is the sky blue?")
        assert isinstance(app.engine, RemoteEngine)
        answer = app.query(MessageView).last()
        assert (answer.content, answer.status) == ("The sky is blue.", "complete")
        status = app.status.status
        assert (status.backend, status.device) == ("openai", server.url.split("/")[2]) and status.tokens_per_second
        assert frames and all(len(frame.tokens) == 8 for frame in frames)  # the fake's canvas
        recorded = [decode_block(data) for data in store.frames(answer.message_id)]  # every step, for replay
        assert [len(block) for block in recorded] == [3, 3]
        assert [app.engine.tokenizer.piece(n) for n in recorded[0][-1].tokens[:3]] == ["The ", "sky ", "is "]
        prompt = app.query_one(Prompt)
        prompt.text = "a draft"
        await pilot.pause(0.3)
        assert not app.query_one(ContextGauge).display  # no token count without a local tokenizer
    stored = store.messages(app.chat_id)[-1]
    assert (stored.content, stored.status, stored.stats["tokens"], stored.stats["steps"]) == (
        "The sky is blue.", "complete", 9, [3, 3])
    assert (stored.model.backend, stored.model.file) == ("openai", server.spec())


async def test_counts_a_server_does_not_report_are_left_out_not_shown_as_zero(make_app, store):
    server = FakeOpenAI(reply=Reply(canvas=False, extension=False, usage=None))  # plain chunks, no usage
    app = remote_app(make_app, server)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await send(pilot, "hi")
            answer = app.query(MessageView).last()
            assert answer.status == "complete"
            assert str(answer.query_one(".message-header").render()) == f"Model · {MODEL} · 2 blocks"
            status = app.status.status
            assert (status.tokens_per_second, status.steps_per_block, status.prompt_tokens) == (None, None, None)
    finally:
        server.close()
    stats = store.messages(app.chat_id)[-1].stats
    assert (stats["tokens"], stats["tokens_per_second"], stats["seed_confirmed"]) == (None, None, False)


async def test_without_canvas_events_a_spinner_with_the_blocks_time_stands_in(make_app, store):
    server = FakeOpenAI(reply=Reply(canvas=False))
    server.hold_before = 1
    app = remote_app(make_app, server)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await send(pilot, "hi", wait=False)
            canvas = app.query_one(CanvasView)
            await wait_until(pilot, lambda: " block 2 · " in canvas.render_line(0).text)
            title = canvas.render_line(0).text
            assert title[0] in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" and title.rstrip().endswith(" s") and canvas.display
            assert app.query(MessageView).last().content == "The sky is "
            server.release.set()
            await finished(pilot)
            assert app.query(MessageView).last().content == "The sky is blue." and not canvas.display
    finally:
        server.close()


async def test_escape_closes_the_stream_and_regenerate_asks_again(make_app, store, server):
    server.hold_before = 1
    app = remote_app(make_app, server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi", wait=False)
        await wait_until(pilot, lambda: server.holding.is_set() and app.query(MessageView).last().content)
        await pilot.press("escape")
        await finished(pilot)
        assert server.client_left.wait(5)
        stopped = app.query(MessageView).last()
        assert (stopped.content, stopped.status) == ("The sky is ", "stopped")
        server.hold_before = None
        await pilot.press("ctrl+r")
        await finished(pilot)
        assert app.query(MessageView).last().content == "The sky is blue."
    versions = store.versions(store.messages(app.chat_id)[-1].id)
    assert [(v.content, v.status) for v in versions] == [("The sky is ", "stopped"), ("The sky is blue.", "complete")]
    assert [[m["role"] for m in body["messages"]] for body in server.requests] == [["user"], ["user"]]


async def test_a_cut_stream_keeps_the_partial_answer_marked_with_the_reason(make_app, store, server):
    server.fail = "cut"
    app = remote_app(make_app, server)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        answer = app.query(MessageView).last()
        assert (answer.content, answer.status) == ("The sky is ", "failed")
    stored = store.messages(app.chat_id)[-1]
    assert stored.status == "failed" and stored.content == "The sky is "
    assert "was cut mid-answer" in stored.error and "\n" not in stored.error


async def test_the_model_picker_takes_a_typed_server_spec_and_lists_the_configured_one(make_app, server):
    app = make_app(settings=Settings(model="demo"), engine_factory=load_engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("tab")
        app.screen.query_one("#model-spec").value = server.spec()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.engine, RemoteEngine))
        assert app.engine.name == MODEL
        app.settings.model = server.spec()
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        labels = [choice.label(app.engine.info.file) for choice in app.screen.choices]
        assert f"● {server.spec()}  (server)" in labels


async def test_the_api_key_stays_out_of_the_history_and_the_export(make_app, store, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = FakeOpenAI(key=KEY)
    app = remote_app(make_app, server)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await send(pilot, "hi")
            assert app.query(MessageView).last().status == "complete"
            server.fail = "401"  # the server echoes the key it got
            await send(pilot, "again")
            assert app.query(MessageView).last().status == "failed"
    finally:
        server.close()
    assert server.headers[0]["Authorization"] == f"Bearer {KEY}"
    base = export_chat(store, app.chat_id, tmp_path / "export", app.engine.name)
    store.close()
    files = [*paths.data_dir().rglob("*"), base.with_suffix(".md"), base.with_suffix(".json")]
    assert paths.history_db() in files
    for file in files:
        if file.is_file():
            assert KEY.encode() not in file.read_bytes(), file


async def test_an_answer_another_server_cut_at_its_length_limit_says_so(make_app):
    server = FakeOpenAI(reply=Reply(canvas=False, extension=False, finish="length"))
    app = remote_app(make_app, server)
    notices = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            app.notify = lambda message, **kw: notices.append((kw.get("title"), message))  # type: ignore[method-assign]
            await send(pilot, "Why is the sky blue?")
    finally:
        server.close()
    assert notices == [("The answer was cut short",
                        "The server ended it at a length limit of its own (its max_tokens or context).")]
