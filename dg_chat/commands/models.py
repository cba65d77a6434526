"""`dg-chat models list|pull|rm|info`: dispatch to the module of each action."""

from __future__ import annotations

import argparse
import importlib


def run(args: argparse.Namespace) -> int:
    # list/pull/rm: dg_chat/commands/model_store.py; info: dg_chat/commands/model_info.py
    module = "model_info" if args.models_command == "info" else "model_store"
    return importlib.import_module(f"dg_chat.commands.{module}").run(args)
