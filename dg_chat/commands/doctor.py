"""`dg-chat doctor`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("dg-chat doctor")
