"""Keys that arrive in one burst (a paste, fast typing, `tmux send-keys`) are handled in order:
Enter sends exactly what the box holds at that point, through the real terminal driver."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dg_chat.store import Store
from tests.support.pty_app import app_in_pty, read_until


def user_messages(timeout: float = 30.0, count: int = 1) -> list[str]:
    """The user messages stored by the app in the test's data dir, once `count` are there."""
    deadline = time.monotonic() + timeout
    texts: list[str] = []
    while len(texts) < count and time.monotonic() < deadline:
        time.sleep(0.2)
        store = Store()
        try:
            texts = [m.content for chat in store.chats() for m in store.messages(chat.id) if m.role == "user"]
        finally:
            store.close()
    return texts


@pytest.mark.parametrize(("burst", "sent"), [
    (b"Tell me of the sea.\r", "Tell me of the sea."),
    (b"one\ntwo\r", "one\ntwo"),  # Ctrl+J (a line feed) adds a line where it was typed
])
def test_a_burst_ending_in_enter_sends_the_whole_box(burst, sent):
    with app_in_pty() as (child, master):
        os.write(master, burst)  # one write: the driver reads every key of it at once
        assert user_messages() == [sent]
        child.send_signal(signal.SIGTERM)
        read_until(master, lambda out: False, timeout=30)
        child.wait(timeout=30)
