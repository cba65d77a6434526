"""`dg-chat` (the chat TUI); `dg-chat --continue` reopens the last chat."""

from __future__ import annotations

import argparse
from contextlib import closing

from dg_chat.store import Store


def run(args: argparse.Namespace) -> int:
    from dg_chat.tui.app import DgChatApp  # noqa: PLC0415 - Textual only for this command

    with closing(Store()) as store:
        app = DgChatApp(args.settings, store=store, continue_last=args.continue_chat)
        app.run()
    return app.return_code or 0
