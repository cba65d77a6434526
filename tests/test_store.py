"""The SQLite history: chats, messages, settings, frames, search, export, migrations, bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dg_chat import paths
from dg_chat.config import Settings
from dg_chat.store import SCHEMA_VERSION, Store, StoreError, title_from


@pytest.fixture
def store() -> Store:
    store = Store()
    yield store
    store.close()


def test_lives_in_the_data_dir_in_wal_mode(store):
    assert store.path == paths.history_db() and store.path.exists()
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_chats_and_messages_round_trip(store):
    settings = Settings()
    settings.sampler.max_steps = 12
    settings.system_prompt = "be brief"
    chat = store.create_chat("first", settings)
    user = store.add_message(chat, "user", "hello")
    model = store.add_message(chat, "model", "", status="partial")
    store.update_message(model, content="hi there", thinking="greet back", status="complete",
                         stats={"tokens": 3, "steps": [12]})
    messages = store.messages(chat)
    assert [(m.id, m.role, m.content, m.thinking, m.status) for m in messages] == [
        (user, "user", "hello", "", "complete"), (model, "model", "hi there", "greet back", "complete")]
    assert messages[1].stats == {"tokens": 3, "steps": [12]}
    loaded = store.chat_settings(chat)
    assert loaded.sampler.max_steps == 12 and loaded.system_prompt == "be brief"
    loaded.sampler.thinking = True
    store.set_chat_settings(chat, loaded)
    assert store.chat_settings(chat).sampler.thinking is True


def test_most_recently_used_chat_comes_first(store):
    older = store.create_chat("older", Settings())
    newer = store.create_chat("newer", Settings())
    assert [c.id for c in store.chats()] == [newer, older] and store.last_chat_id() == newer
    store.add_message(older, "user", "back to the old one")
    assert [c.id for c in store.chats()] == [older, newer] and store.last_chat_id() == older


def test_search_rename_and_delete(store):
    fruit = store.create_chat("fruit", Settings())
    store.add_message(fruit, "user", "Do you like 100% pure apple juice?")
    tools = store.create_chat("tools", Settings())
    store.add_message(tools, "model", "use a hammer", thinking="nails need a_hammer")
    assert [c.title for c in store.chats("APPLE")] == ["fruit"]
    assert [c.title for c in store.chats("100%")] == ["fruit"]
    assert [c.title for c in store.chats("a_h")] == ["tools"]  # found in the thinking
    assert store.chats("0%p") == []  # % and _ are literal, not wildcards
    assert [c.title for c in store.chats("tool")] == ["tools"]
    store.rename_chat(tools, "Workshop")
    assert store.chat(tools).title == "Workshop"
    model = store.messages(tools)[0].id
    store.save_frames(model, 0, b"frames")
    store.delete_chat(tools)
    assert [c.id for c in store.chats()] == [fruit]
    assert store.frames(model) == []  # cascades to messages and frames
    with pytest.raises(StoreError, match="no chat"):
        store.chat(tools)


def test_delete_messages_from_keeps_earlier_ones_and_other_chats(store):
    chat, other = store.create_chat("a", Settings()), store.create_chat("b", Settings())
    ids = [store.add_message(chat, role, text) for role, text in
           [("user", "1"), ("model", "2"), ("user", "3"), ("model", "4")]]
    kept = store.add_message(other, "user", "elsewhere")
    store.delete_messages_from(ids[2])
    assert [m.content for m in store.messages(chat)] == ["1", "2"]
    assert [m.id for m in store.messages(other)] == [kept]


def test_frames_are_kept_per_block_in_order(store):
    chat = store.create_chat("a", Settings())
    message = store.add_message(chat, "model", "x")
    store.save_frames(message, 1, b"second")
    store.save_frames(message, 0, b"first")
    store.save_frames(message, 1, b"second, rewritten")
    assert store.frames(message) == [b"first", b"second, rewritten"]


def test_export_markdown_and_json(store):
    chat = store.create_chat("Export test", Settings())
    store.add_message(chat, "user", "question")
    answer = store.add_message(chat, "model", "", status="partial")
    store.update_message(answer, content="half an answer", thinking="hmm", status="stopped")
    failed = store.add_message(chat, "model", "", status="partial")
    store.update_message(failed, content="", thinking="", status="failed", error="out of memory")
    markdown = store.export_markdown(chat)
    assert markdown.startswith("# Export test\n")
    assert "## You\n\nquestion" in markdown
    thinking = "<details><summary>Thinking</summary>\n\nhmm\n\n</details>"
    assert f"## Model (stopped)\n\n{thinking}\n\nhalf an answer" in markdown
    assert "## Model (failed: out of memory)" in markdown
    data = store.export_json(chat)
    assert data["title"] == "Export test" and data["settings"]["sampler"]["max_steps"] == 48
    assert [(m["role"], m["content"], m["status"]) for m in data["messages"]] == [
        ("user", "question", "complete"), ("model", "half an answer", "stopped"), ("model", "", "failed")]


def test_writes_from_several_threads(store):
    chat = store.create_chat("busy", Settings())

    def write(n: int) -> None:
        for i in range(25):
            store.add_message(chat, "user", f"{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.messages(chat)) == 100


def test_reopening_keeps_everything(store):
    chat = store.create_chat("kept", Settings())
    store.add_message(chat, "user", "still here?")
    store.close()
    again = Store()
    assert [m.content for m in again.messages(chat)] == ["still here?"]
    again.close()


def test_migrates_an_empty_database_and_refuses_a_newer_one(tmp_path):
    path = tmp_path / "h.sqlite3"
    sqlite3.connect(path).close()
    Store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer dg-chat"):
        Store(path)


def test_a_corrupt_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="unreadable") as info:
        Store(path)
    assert "\n" not in str(info.value)


def test_damaged_chat_settings_fall_back_to_defaults(store):
    chat = store.create_chat("a", Settings())
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE chats SET settings = ? WHERE id = ?", ('{"sampler": {"max_steps": -1}}', chat))
    assert store.chat_settings(chat).sampler.max_steps == 48


def test_title_from_the_first_message():
    assert title_from("\n  Hello there\nsecond line") == "Hello there"
    assert title_from("   ") == "New chat"
    long = title_from("x" * 100)
    assert len(long) == 48 and long.endswith("…")


def test_store_and_recording_do_not_import_textual():
    code = ("import sys, dg_chat.store, dg_chat.tui.recording, dg_chat.tui.text; "
            "print([m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')])")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"
