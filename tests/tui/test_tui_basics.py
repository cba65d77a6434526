"""The basics a chat app user expects: a model picker that records which model answered, the key
help, the app's actions in the command palette, prompt history, per-message stats, a welcome view."""

from __future__ import annotations

import threading

import pytest

from dg_chat import hub
from dg_chat.config import Settings
from dg_chat.engine.model_info import ModelInfo
from dg_chat.errors import DgChatError
from dg_chat.tui.bindings import binding_ids, key_bindings
from dg_chat.tui.screens.help import HelpScreen
from dg_chat.tui.screens.model_picker import ModelPicker
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.welcome import DEMO_PROMPTS, EXAMPLE_PROMPTS, Welcome, example_prompts
from tests.support.scripts import load_script
from tests.tui.conftest import SIZE, ready, send, wait_until
from tests.tui.fake_engine import ScriptedEngine


def header(view: MessageView) -> str:
    return str(view.query_one(".message-header").render())


def engines_by_model(**engines: ScriptedEngine):
    """A factory that loads the engine named by `settings.model`; an unknown name fails to load."""
    def load(settings: Settings) -> ScriptedEngine:
        if settings.model not in engines:
            raise DgChatError(f"no such model file: {settings.model}")
        return engines[settings.model]

    return load


async def test_the_model_picker_loads_the_chosen_model_and_each_answer_names_its_model(make_app, store):
    first, demo = ScriptedEngine(), ScriptedEngine()
    demo.name = "demo-dg"
    app = make_app(engine_factory=engines_by_model(scripted=first, demo=demo))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        picker = app.screen
        assert [choice.spec for choice in picker.choices][0] == "demo"
        await pilot.press("enter")  # the demo is listed first
        await wait_until(pilot, lambda: app.engine is demo)
        assert first.closed
        await send(pilot, "again")
        answers = [v for v in app.query(MessageView) if v.role == "model"]
        assert header(answers[0]).startswith("Model · fake-dg Q4_K_M · ")
        assert header(answers[1]).startswith("Model · demo-dg Q4_K_M · ")
    stored = [m.model for m in store.messages(app.chat_id) if m.role == "model"]
    assert [model.name for model in stored] == ["fake-dg", "demo-dg"]
    assert stored[0].file == "/models/fake-dg-Q4_K_M.gguf" and stored[0].device == "cpu"


@pytest.mark.parametrize("model", ["demo", "models/demo.gguf"], ids=["by name", "by a relative path"])
async def test_picking_the_loaded_model_keeps_it_and_loads_nothing(make_app, monkeypatch, model):
    from dg_chat import hub
    from dg_chat.engine.loader import load_engine

    monkeypatch.chdir(hub.demo_file().parent.parent)
    loads = []

    def counting(settings: Settings):
        loads.append(settings.model)
        return load_engine(settings)

    app = make_app(settings=Settings(model=model, device="cpu"), engine_factory=counting)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        loaded = app.engine
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("enter")  # the loaded model is the one highlighted
        await wait_until(pilot, lambda: not isinstance(app.screen, ModelPicker))
        await pilot.pause(0.2)
        assert app.engine is loaded and loads == [model]
        assert "demo is already loaded" in [n.message for n in app._notifications]


async def test_while_a_picked_model_loads_nothing_starts_an_answer_it_would_cut_into(make_app):
    first, demo, loaded = ScriptedEngine(), ScriptedEngine(), threading.Event()
    load = engines_by_model(scripted=first, demo=demo)
    app = make_app(engine_factory=lambda settings: loaded.wait(30) and load(settings) if settings.model == "demo"
                   else load(settings))
    notices = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("enter")  # the demo, which loads until `loaded` is set
        app.notify = lambda message, **kw: notices.append(message)  # type: ignore[method-assign]
        await send(pilot, "too early", wait=False)
        await pilot.press("f2")
        assert notices == ["No model to answer with: the model is still loading",
                           "A model is loading: pick another once it is ready"]
        assert app.query_one(Prompt).text == "too early" and not app.query(MessageView)
        loaded.set()
        await wait_until(pilot, lambda: app.engine is demo)
        assert first.closed
        await send(pilot, "now")
        assert app.query(MessageView).last().content == "You said: now"


async def test_a_new_model_does_not_show_the_last_one_s_speed(make_app):
    demo = ScriptedEngine()
    app = make_app(engine_factory=engines_by_model(scripted=ScriptedEngine(), demo=demo))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hi")
        status = app.status.status
        assert status.tokens_per_second and status.steps_per_block and status.prompt_tokens
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is demo)
        status = app.status.status
        assert (status.tokens_per_second, status.steps_per_block, status.prompt_tokens) == (None, None, None)


async def test_quitting_does_not_wait_for_a_model_that_is_loading(make_app):
    engine, loaded = ScriptedEngine(), threading.Event()
    app = make_app(engine_factory=lambda settings: loaded.wait(30) and engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        loader = next(thread for thread in threading.enumerate() if thread.name == "dg-chat-load")
    assert loader.is_alive()  # the app has quit while the weights are still loading
    loaded.set()
    loader.join(timeout=10)
    assert engine.closed  # it arrived after the app had closed


async def test_a_model_that_fails_to_load_is_reported_and_the_loaded_one_stays(make_app):
    engine = ScriptedEngine()
    app = make_app(engine_factory=engines_by_model(scripted=engine))
    notices = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.notify = lambda message, **kw: notices.append((message, kw.get("title")))  # type: ignore[method-assign]
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))
        await pilot.press("enter")  # the demo: this factory cannot load it
        await wait_until(pilot, lambda: notices)
        assert notices == [("no such model file: demo", "Could not load the model")]
        assert app.engine is engine and not engine.closed
        await send(pilot, "still there?")
        assert app.query(MessageView).last().content == "You said: still there?"


async def test_answers_show_model_and_stats_in_their_header_also_when_reopened(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one two three")
        live = header(app.query(MessageView).last())
        chat_id = app.chat_id
        await app.show_chat(None)
        await app.show_chat(chat_id)
        await pilot.pause()
        reopened = header(app.query(MessageView).last())
    # the fake engine: 6 tokens (end token included) in one block of 6 steps in 0.25 s
    assert live == reopened == "Model · fake-dg Q4_K_M · 6 tok · 1 block × 6 steps · 24.0 tok/s"


@pytest.mark.parametrize("max_canvases, context_blocks, why", [
    (1, None, "No end of turn within 1 block: raise “Blocks per answer” in the settings for longer answers."),
    (2, 1, "The model's context is full: a new chat leaves room for longer answers.")])
async def test_an_answer_cut_short_says_so_in_its_header_and_a_notice_says_why(make_app, max_canvases,
                                                                               context_blocks, why):
    settings = Settings()
    settings.sampler.max_canvases = max_canvases
    app = make_app(ScriptedEngine(canvas_length=4, context_blocks=context_blocks), settings=settings)
    notices = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.notify = lambda message, **kw: notices.append((kw.get("title"), message))  # type: ignore[method-assign]
        await send(pilot, "one two three")  # "You said: one two three" needs more than one 4-token canvas
        chat_id = app.chat_id
        await app.show_chat(None)
        await app.show_chat(chat_id)
        await pilot.pause()
        reopened = header(app.query(MessageView).last())
    assert reopened.endswith(" · 1 block × 6 steps · 16.0 tok/s · cut short")
    assert notices == [("The answer was cut short", why)]


async def test_the_help_screen_lists_every_binding_by_id_with_its_remapped_key(make_app):
    settings = Settings()
    settings.ui.keymap = {"regenerate": "f5"}
    app = make_app(ScriptedEngine(), settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = {row.id: row for _, rows in app.screen.groups for row in rows}
        assert set(rows) == binding_ids()
        assert rows["regenerate"].keys == "F5" and rows["pick-model"].keys == "F2"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_the_command_palette_lists_and_runs_the_apps_actions(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        assert {"New chat", "Model", "Settings", "Export", "Replay", "Thinking", "Key bindings"} <= titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Model")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPicker))


async def test_up_and_down_in_an_empty_prompt_recall_earlier_prompts(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "first")
        await send(pilot, "second\nline")
        prompt = app.query_one(Prompt)
        prompt.focus()
        shown = []
        for key in ("up", "up", "up", "down", "down"):
            await pilot.press(key)
            shown.append(prompt.text)
        assert shown == ["second\nline", "first", "first", "second\nline", ""]
        prompt.text = "typed"  # a draft: ↑ moves the cursor, it does not replace the draft
        await pilot.press("up")
        assert prompt.text == "typed"


async def test_earlier_sessions_prompts_are_recalled(make_app, store):
    chat = store.create_chat("old", Settings())
    store.add_message(chat, "user", "from yesterday")
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("up")
        assert app.query_one(Prompt).text == "from yesterday"


async def test_an_empty_chat_welcomes_with_the_model_and_example_prompts(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.pause()
        text = "\n".join(str(static.render()) for static in app.query_one(Welcome).query("Static"))
        assert "Model: fake-dg Q4_K_M · torch/cpu" in text
        assert all(prompt in text for prompt in EXAMPLE_PROMPTS)
        await send(pilot, "hi")
        assert not app.query(Welcome)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: bool(app.query(Welcome)))


def test_the_demo_models_welcome_asks_what_its_guide_knows():
    demo = ModelInfo("dg-chat guide", str(hub.demo_file()), "", "torch", "cpu")
    assert example_prompts(demo) == DEMO_PROMPTS and example_prompts(None) == EXAMPLE_PROMPTS
    guide = load_script("demo_guide").load()
    assert set(DEMO_PROMPTS) <= {question for topic in guide.topics for question in topic.questions}


def test_every_binding_id_is_unique():
    ids = [binding.id for binding in key_bindings()]
    assert len(ids) == len(set(ids))


async def test_the_prompt_area_counts_the_drafts_tokens_and_the_context_it_fills(make_app):
    from dg_chat.engine.turn_engine import ContextUse
    from dg_chat.tui.widgets.gauge import ContextGauge

    engine = ScriptedEngine()
    engine.backend.context_length = 100
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one two")  # the fake's prompt: each message's tokens and an end token
        gauge = app.query_one(ContextGauge)
        prompt = app.query_one(Prompt)
        prompt.focus()
        await pilot.press(*"three four five")
        await wait_until(pilot, lambda: "tokens" in str(gauge.render()))
        # the prompt: 3 (one two) + 5 (You said: one two) + 4 (the draft) = 12 tokens, and a canvas of 48
        assert str(gauge.render()) == "3 tokens · context ██████░░░░ 60/100 with one canvas"
        assert not gauge.has_class("over")
        prompt.text = "word " * 60
        await wait_until(pilot, lambda: gauge.has_class("over"))
        assert "too long for the model" in str(gauge.render())
        # a draft far too long to be worth counting: the engine gives lower bounds
        engine.context_use = lambda messages, thinking: ContextUse(20_000, 19_990, 48, 100, exact=False)
        prompt.text = "a huge paste"
        await wait_until(pilot, lambda: str(gauge.render()).startswith("≥"))
        assert str(gauge.render()).startswith("≥ 19,990 tokens · context ██████████ ≥ 20,048/100 with one canvas")
        prompt.text = ""
        await wait_until(pilot, lambda: str(gauge.render()) == "")


async def test_regenerate_keeps_the_earlier_answer_as_a_version(make_app, store):
    replies = iter(["first answer", "second answer"])
    app = make_app(ScriptedEngine(lambda m: next(replies)))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "question")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not app.generating and app.query(MessageView).last().status == "complete"
                         and app.query(MessageView).last().content == "second answer")
        answer = app.query(MessageView).last()
        assert answer.content == "second answer" and header(answer).startswith("Model · ◀ 2/2 ▶ · ")
        answer.focus()
        await pilot.press("left")
        await wait_until(pilot, lambda: app.query(MessageView).last().content == "first answer")
        earlier = app.query(MessageView).last()
        assert header(earlier).startswith("Model · ◀ 1/2 ▶ · ") and app.focused is earlier
        assert len(app.query(MessageView)) == 2
        # the version shown is the one in the chat and in the next turn's context
        assert [m.content for m in store.messages(app.chat_id)] == ["question", "first answer"]
        await pilot.press("right")
        await wait_until(pilot, lambda: app.query(MessageView).last().content == "second answer")
        chat_id = app.chat_id
        await app.show_chat(None)
        await app.show_chat(chat_id)
        await pilot.pause()
        assert header(app.query(MessageView).last()).startswith("Model · ◀ 2/2 ▶ · ")


async def test_a_question_mark_typed_in_the_prompt_is_text_not_the_help(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        app.query_one(Prompt).focus()
        await pilot.press(*"why?")
        assert app.query_one(Prompt).text == "why?" and not isinstance(app.screen, HelpScreen)


def test_the_model_choices_are_the_demo_downloads_and_local_ggufs(tmp_path):
    from dg_chat.tui.screens.model_picker import model_choices

    configured, loaded = tmp_path / "llada-8b-Q4_K_M.gguf", tmp_path / "dream.gguf"
    configured.write_bytes(b"GGUF" + bytes(100))
    loaded.write_bytes(b"GGUF")
    settings = Settings()
    settings.model = str(configured)
    choices = model_choices(settings, str(loaded))
    assert [choice.spec for choice in choices] == ["demo", str(configured), str(loaded)]
    assert choices[1].size == 104 and choices[2].label(str(loaded)).startswith("● ")


async def test_the_model_picker_shows_file_names_as_text_not_markup(make_app, tmp_path):
    from textual.widgets import OptionList

    from dg_chat.tui.screens.model_picker import ModelChoice

    names = ["[Q4_K_M] model.gguf", 'a[b="]c.gguf', "[@click=app.quit]x.gguf"]  # the second one was a crash
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await app.push_screen(ModelPicker([ModelChoice(str(tmp_path / name), tmp_path / name) for name in names]))
        await pilot.pause()
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(len(names))]
        assert all(name in text for name, text in zip(names, shown, strict=True))


async def test_thinking_is_open_while_it_denoises_and_folded_after(make_app):
    from textual.widgets import Collapsible

    from tests.tui.conftest import paused

    settings = Settings()
    settings.sampler.thinking = True
    engine = ScriptedEngine(lambda m: "The answer. " * 12, canvas_length=16, pause_at=(1, 2))
    app = make_app(engine, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "think first", wait=False)
        await paused(pilot, engine)
        thinking = app.query(MessageView).last().query_one(".thinking", Collapsible)
        assert thinking.display and not thinking.collapsed and thinking.title == "Thinking…"
        engine.resume.set()
        await wait_until(pilot, lambda: not app.generating)
        await pilot.pause()
        assert thinking.collapsed and thinking.title == "Thinking · 10 words"
        await pilot.click(thinking.query_one("CollapsibleTitle"))  # a click on its title opens it again
        await pilot.pause()
        assert not thinking.collapsed
