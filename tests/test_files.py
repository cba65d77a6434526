"""write_atomically: the old file or the new one, never part of one, and no leftovers."""

from __future__ import annotations

from contextlib import closing

import pytest

from dg_chat.config import Settings
from dg_chat.export import export_chat
from dg_chat.files import write_atomically
from dg_chat.store import Store


def test_a_write_replaces_the_file_keeping_its_mode_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "config.toml"
    write_atomically(path, "a = 1\n")
    assert path.read_text() == "a = 1\n" and path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    write_atomically(path, "a = 2\n")
    assert path.read_text() == "a = 2\n" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "first_run.json"
    write_atomically(path, '{"choice": "demo"}\n')
    with pytest.raises(UnicodeEncodeError):  # fails halfway through writing, as a full disk would
        write_atomically(path, '{"choice": "' + "x" * 100_000 + '\udcff"}\n')
    assert path.read_text() == '{"choice": "demo"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["first_run.json"]


def test_an_export_shows_the_controls_of_answers_in_markdown_and_escapes_them_in_json(tmp_path):
    with closing(Store()) as store:
        chat = store.create_chat("t", Settings())
        store.add_message(chat, "user", "hi")
        store.add_message(chat, "model", "wiped \x1b[2J \x9b31m \u202eevil")
        base = export_chat(store, chat, tmp_path, "fake")
    markdown, data = base.with_suffix(".md").read_text(), base.with_suffix(".json").read_text()
    assert "wiped ␛[2J" in markdown and not any(c in markdown for c in "\x1b\x9b\u202e")
    assert data.isascii() and "\\u001b[2J \\u009b31m \\u202eevil" in data
