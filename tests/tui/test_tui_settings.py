"""The settings screen: the loaded model's family only, human labels, first field focused and
visibly so, "this chat" or "save as default"."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input, Label, TextArea

from dg_chat import paths
from dg_chat.config import SamplerSettings, Settings, load_settings
from dg_chat.text.sanitize import printable
from dg_chat.tui.screens.settings import SettingsScreen
from tests.tui.conftest import SIZE, ready, send, wait_until
from tests.tui.fake_engine import ScriptedEngine


async def open_settings(pilot) -> SettingsScreen:
    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen))
    await pilot.pause()
    return pilot.app.screen


def field_ids(screen: SettingsScreen) -> set[str]:
    return {w.id.removeprefix("setting-") for w in screen.query("*") if w.id and w.id.startswith("setting-")}


@pytest.mark.parametrize(("noise", "shown", "hidden"), [
    ("uniform", {"t_max", "t_min", "entropy_bound"}, {"temperature", "top_p", "algorithm"}),
    ("mask", {"temperature", "top_p", "top_k", "algorithm"}, {"t_max", "t_min", "entropy_bound"}),
])
async def test_only_the_loaded_family_s_fields_with_human_labels(make_app, noise, shown, hidden):
    engine = ScriptedEngine()
    engine.backend.noise = noise
    app = make_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_settings(pilot)
        ids = field_ids(screen)
        assert shown <= ids and not hidden & ids
        labels = [str(label.render()) for label in screen.query(".setting-name").results(Label)]
        assert "Steps per block" in labels and "max_steps" not in labels


async def test_the_first_field_has_a_visible_focus(make_app):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_settings(pilot)
        assert screen.focused is screen.query_one("#setting-max_steps")
        rows = list(screen.query(".setting"))
        focused, other = rows[0], rows[1]
        assert focused.styles.background != other.styles.background


async def test_save_as_default_applies_to_new_chats_and_the_config_file(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        screen = await open_settings(pilot)
        screen.query_one("#setting-max_steps").value = "3"
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        assert store.chat_settings(app.chat_id).sampler.max_steps == 3
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat_settings.sampler.max_steps == 3
    assert load_settings().sampler.max_steps == 3
    assert "[sampler]" in paths.config_file().read_text()


async def test_save_as_default_writes_what_was_chosen_not_a_flag_of_this_run(make_app, store, monkeypatch):
    """`dg-chat --steps 7` with DG_CHAT_MAX_CANVASES=1, then "save as default" with only t_max
    changed: the file gets t_max, not the 7 or the 1 of this run (a flag lasts one run)."""
    monkeypatch.setenv("DG_CHAT_MAX_CANVASES", "1")
    settings = load_settings({"max_steps": 7})
    app = make_app(ScriptedEngine(), settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        screen = await open_settings(pilot)
        assert screen.query_one("#setting-max_steps", Input).value == "7"
        screen.query_one("#setting-t_max", Input).value = "0.9"
        await pilot.press("ctrl+d")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert (app.chat_settings.sampler.max_steps, app.chat_settings.sampler.t_max) == (7, 0.9)  # this run
        notices = [n.message for n in app._notifications]
    monkeypatch.delenv("DG_CHAT_MAX_CANVASES")
    saved = load_settings().sampler
    assert (saved.t_max, saved.max_steps, saved.max_canvases) == (0.9, 48, SamplerSettings().max_canvases)
    assert "max_steps" not in paths.config_file().read_text()
    assert any("not max_steps, max_canvases: set for this run only, by a flag or the environment" in n
               for n in notices)


async def test_this_chat_only_leaves_the_defaults(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello")
        screen = await open_settings(pilot)
        screen.query_one("#setting-max_steps").value = "5"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, SettingsScreen))
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.chat_settings.sampler.max_steps == 48
    assert not paths.config_file().exists()


async def test_a_paste_into_any_field_and_a_saved_system_prompt_show_their_controls(make_app):
    """The app makes every paste safe before a widget gets it (the system prompt's box and the
    one-line fields draw their text as it is), and a system prompt saved with controls opens
    with them as stand-ins: no escape sequence reaches the terminal from the settings screen."""
    hostile = "be brief\x1b]52;c;ZXZpbA==\x07\tthen\x1b[2J stop\n"
    app = make_app(ScriptedEngine(), settings=Settings(system_prompt=hostile))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_settings(pilot)
        system_prompt = screen.query_one("#setting-system_prompt", TextArea)
        assert system_prompt.text == printable(hostile) and "\x1b" not in system_prompt.text
        system_prompt.text = ""
        system_prompt.focus()
        app.post_message(events.Paste(hostile))  # as the terminal's bracketed paste arrives
        await pilot.pause()
        assert system_prompt.text == printable(hostile)
        steps = screen.query_one("#setting-max_steps", Input)
        steps.value = ""
        steps.focus()
        app.post_message(events.Paste("3\x1b[2J"))
        await pilot.pause()
        assert steps.value == "3␛[2J"
