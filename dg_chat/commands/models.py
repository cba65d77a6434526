"""`dg-chat models list|pull|rm|info`: dispatch to the module of each action."""

from __future__ import annotations

import argparse
import importlib


def run(args: argparse.Namespace) -> int:
    # list/pull/rm: dg_chat/commands/model_store.py; info: dg_chat/commands/model_info.py
    module = "model_info" if args.models_command == "info" else "model_store"
    try:
        action = importlib.import_module(f"dg_chat.commands.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"dg_chat.commands.{module}":
            raise
        raise NotImplementedError(f"dg-chat models {args.models_command}") from None
    return action.run(args)
