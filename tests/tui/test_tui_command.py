"""`dg-chat` and `dg-chat --continue` start the app; a broken history is a one-line error."""

from __future__ import annotations

import pytest

from dg_chat import paths
from dg_chat.cli import main
from dg_chat.tui.app import DgChatApp, default_engine_factory


@pytest.fixture(autouse=True)
def in_terminal(monkeypatch):
    monkeypatch.setattr("dg_chat.commands.chat.in_terminal", lambda: True)


def test_without_a_terminal_the_app_does_not_start_and_says_what_to_use(monkeypatch, capsys):
    monkeypatch.setattr("dg_chat.commands.chat.in_terminal", lambda: False)
    monkeypatch.setattr(DgChatApp, "run", lambda app: pytest.fail("the app started"))
    assert main([]) == 1
    assert capsys.readouterr().err == ("dg-chat: error: the chat app needs a terminal; to answer from a pipe or a "
                                       "script, use `dg-chat ask`\n")


def test_chat_command_starts_the_app(monkeypatch):
    started = []
    monkeypatch.setattr(DgChatApp, "run", lambda app: started.append(app))
    assert main(["--continue", "--steps", "12"]) == 0
    assert main([]) == 0
    first, second = started
    assert first.continue_last and not second.continue_last
    assert first.settings.sampler.max_steps == 12
    assert first.engine_factory is default_engine_factory
    assert first.store.path == paths.history_db()


def test_an_unreadable_history_is_a_one_line_error(capsys):
    paths.history_db().parent.mkdir(parents=True)
    paths.history_db().write_bytes(b"garbage" * 1000)
    assert main(["--continue"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the history {paths.history_db()} is damaged" in err
    assert "dg-chat doctor --repair-history" in err
