"""Export asks for the folder (by default the data dir's exports/, whatever the working directory)
and says when, with which model and which settings."""

from __future__ import annotations

import json

from dg_chat import paths
from dg_chat.config import Settings
from dg_chat.tui.app import DgChatApp
from dg_chat.tui.screens.dialogs import AskText
from tests.tui.conftest import SIZE, send, wait_until
from tests.tui.fake_engine import ScriptedEngine, factory


async def test_export_defaults_to_the_data_dir_even_from_a_read_only_cwd(store, tmp_path, monkeypatch):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    monkeypatch.chdir(read_only)
    app = DgChatApp(Settings(model="scripted"), store=store, engine_factory=factory(ScriptedEngine()))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "export me")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, AskText))
        assert app.screen.query_one("#dialog-input").value == str(paths.data_dir() / "exports")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("Exported to" in n.message for n in app._notifications))
    assert list(read_only.iterdir()) == []
    base = paths.data_dir() / "exports" / f"dg-chat-{app.chat_id}-export-me"
    markdown = base.with_suffix(".md").read_text()
    header = markdown.split("## You")[0]
    assert "exported 20" in header and "model: fake-dg" in header and "max_steps 48" in header
    data = json.loads(base.with_suffix(".json").read_text())
    assert data["model"] == "fake-dg" and data["exported"].startswith("20") and data["settings"]["sampler"]


async def test_export_to_a_folder_typed_in(make_app, tmp_path):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "elsewhere")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, AskText))
        app.screen.query_one("#dialog-input").value = str(tmp_path / "new" / "folder")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("Exported to" in n.message for n in app._notifications))
    assert (tmp_path / "new" / "folder" / f"dg-chat-{app.chat_id}-elsewhere.md").is_file()
