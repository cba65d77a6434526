"""SIGTERM and SIGHUP end the app like Ctrl+Q: the terminal is restored, the exit status is 128 + signal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESTORED = (b"\x1b[?1049l", b"\x1b[?25h", b"\x1b[?1000l")
"""Alternate screen off, cursor shown, mouse reporting off."""


def read_until(fd: int, done, timeout: float = 60.0) -> bytes:
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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_termination_signal_restores_the_terminal_and_exits_128_plus_it(signum):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    child = subprocess.Popen([sys.executable, "-m", "tests.tui.signal_child"], cwd=ROOT, stdin=slave, stdout=slave,
                             stderr=slave, env={**os.environ, "TERM": "xterm-256color"}, start_new_session=True)
    os.close(slave)
    try:
        started = read_until(master, lambda out: b"ready" in out)
        assert b"ready" in started, started[-2000:]
        child.send_signal(signum)
        ended = read_until(master, lambda out: False, timeout=30)
        assert child.wait(timeout=30) == 128 + signum, ended[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert all(sequence in ended for sequence in RESTORED), ended[-500:]
