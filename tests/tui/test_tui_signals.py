"""SIGTERM, SIGHUP and SIGINT end the app like Ctrl+Q: the terminal is restored, the exit status is 128 + signal."""

from __future__ import annotations

import signal

import pytest

from tests.support.pty_app import app_in_pty, read_until

RESTORED = (b"\x1b[?1049l", b"\x1b[?25h", b"\x1b[?1000l")
"""Alternate screen off, cursor shown, mouse reporting off."""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_termination_signal_restores_the_terminal_and_exits_128_plus_it(signum):
    with app_in_pty() as (child, master):
        child.send_signal(signum)
        ended = read_until(master, lambda out: False, timeout=30)
        assert child.wait(timeout=30) == 128 + signum, ended[-2000:]
    assert all(sequence in ended for sequence in RESTORED), ended[-500:]
