"""SIGTERM, SIGHUP and SIGINT end the app like Ctrl+Q (a running answer is stored as stopped, the
terminal is restored), with the exit status of a process killed by that signal (143, 129, 130).
SIGINT only comes from outside (`kill -INT`): in the app, Ctrl+C is a key."""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress
from typing import Any

from textual.app import App

EXIT_STATUS = {signum: 128 + signum
               for signum in (getattr(signal, name, None) for name in ("SIGTERM", "SIGHUP", "SIGINT"))
               if signum is not None}
"""Signals that end the app as Ctrl+Q does, and the exit status of each (143, 129, 130; Windows has no SIGHUP)."""


def exit_on_signals(app: App[Any]) -> None:
    loop = asyncio.get_running_loop()
    # Only an event loop of the main thread on a POSIX system can; elsewhere the defaults stay.
    with suppress(NotImplementedError, RuntimeError):
        for signum, status in EXIT_STATUS.items():
            loop.add_signal_handler(signum, app.exit, None, status)


def restore_signals() -> None:
    with suppress(NotImplementedError, RuntimeError):
        for signum in EXIT_STATUS:
            asyncio.get_running_loop().remove_signal_handler(signum)
