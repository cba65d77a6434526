"""`dg-chat models list|pull|rm|info`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError(f"dg-chat models {args.models_command}")
