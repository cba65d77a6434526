"""`dg-chat` (the chat TUI); `dg-chat --continue` reopens the last chat."""

from __future__ import annotations

import argparse
import sys
from contextlib import closing

from dg_chat.errors import DgChatError
from dg_chat.store import Store


def in_terminal() -> bool:
    """Whether stdin and stdout are a terminal: elsewhere the app would draw into a pipe and wait forever."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))


def run(args: argparse.Namespace) -> int:
    if not in_terminal():
        raise DgChatError("the chat app needs a terminal; to answer from a pipe or a script, use `dg-chat ask`")
    from dg_chat.tui.app import DgChatApp  # noqa: PLC0415 - Textual only for this command

    with closing(Store()) as store:
        app = DgChatApp(args.settings, store=store, continue_last=args.continue_chat)
        app.run()
    return app.return_code or 0
