"""`ask --show-steps` draws the live canvas on stderr (a terminal) and leaves nothing of it behind:
the answer goes to stdout whole, after the last frame is cleared when both share the terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.support.pty_app import read_until

ARGV = ["-m", "dg_chat.cli", "ask", "Tell me of the sea.", "--model", "demo", "--seed", "1", "--max-canvases", "2"]
ERASE_LINE = b"\x1b[2K"


def expected_answer() -> str:
    result = subprocess.run([sys.executable, *ARGV, "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["text"]


def run_in_terminal(stdout_to_terminal: bool) -> tuple[bytes, bytes]:
    """(what the terminal shows, what a pipe on stdout got)."""
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, *ARGV, "--show-steps"], stdin=subprocess.DEVNULL,
                             stdout=slave if stdout_to_terminal else subprocess.PIPE, stderr=slave,
                             env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"})
    os.close(slave)
    try:
        terminal = read_until(master, lambda out: False, timeout=300)
        piped = b"" if stdout_to_terminal else child.stdout.read()
        assert child.wait(timeout=60) == 0, terminal[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    return terminal, piped


def test_the_answer_is_written_after_the_last_frame_is_cleared():
    answer = expected_answer().strip()
    terminal, _ = run_in_terminal(stdout_to_terminal=True)
    assert ERASE_LINE in terminal  # frames were drawn, and erased
    after_frames = terminal[terminal.rindex(ERASE_LINE):].decode().replace("\r\n", "\n")
    assert answer in after_frames


def test_a_piped_stdout_gets_the_answer_while_the_frames_go_to_the_terminal():
    answer = expected_answer()
    terminal, piped = run_in_terminal(stdout_to_terminal=False)
    assert ERASE_LINE in terminal
    assert piped.decode() == answer + "\n"
