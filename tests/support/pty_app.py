"""The real app (tests/tui/signal_child.py: the TUI over the scripted engine) in a pseudo-terminal,
for tests of what only a real terminal driver shows: key bursts, signals, terminal restore."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def read_until(fd: int, done: Callable[[bytes], bool], timeout: float = 60.0) -> bytes:
    """What the terminal receives until `done(output)` holds or the child closes it."""
    output = b""
    deadline = time.monotonic() + timeout
    while not done(output) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not chunk:
                break
            output += chunk
    return output


@contextmanager
def app_in_pty(rows: int = 30, columns: int = 100) -> Iterator[tuple[subprocess.Popen, int]]:
    """(the app's process, the terminal's master fd), once the app says it is ready; killed after."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    child = subprocess.Popen([sys.executable, "-m", "tests.tui.signal_child"], cwd=ROOT, stdin=slave, stdout=slave,
                             stderr=slave, env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(slave)
    try:
        started = read_until(master, lambda out: b"ready" in out)
        assert b"ready" in started, started[-2000:]
        yield child, master
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
