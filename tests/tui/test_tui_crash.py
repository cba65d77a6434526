"""History survives a killed process: the question and the committed part of the answer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dg_chat.recording import decode_block
from dg_chat.store import Store

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "The quick brown fox jumps over the lazy dog. " * 10


def test_sigkill_mid_turn_keeps_the_question_and_the_partial_answer():
    child = subprocess.Popen([sys.executable, "-m", "tests.tui.crash_child"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line == "mid-turn\n", child.stderr.read() if child.poll() is not None else line
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    store = Store()
    (chat,) = store.chats()
    user, model = store.messages(chat.id)
    assert (user.role, user.content, user.status) == ("user", "please survive a crash", "complete")
    assert model.role == "model" and model.status == "partial"
    assert model.content and ANSWER.startswith(model.content) and model.content != ANSWER  # block 1 only
    assert [len(decode_block(data)) for data in store.frames(model.id)] == [6]
    store.close()
