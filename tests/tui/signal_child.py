"""Child process of test_tui_signals: `dg-chat --model scripted` on the scripted engine, in a terminal."""

from __future__ import annotations

import sys

import dg_chat.engine.loader
from dg_chat import cli
from tests.tui.fake_engine import ScriptedEngine

dg_chat.engine.loader.load_engine = lambda settings: ScriptedEngine()
sys.exit(cli.main(["--model", "scripted"]))
