"""The headless core (engine, gguf, text, hub, store) never imports textual: ask, the benchmarks
and the tests use it without a terminal UI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dg_chat"
HEADLESS = ("engine", "gguf", "text", "hub", "store")


def headless_modules() -> list[str]:
    """Every module of the headless parts that exists now, so new modules are covered as they come."""
    files: list[Path] = []
    for name in HEADLESS:
        if (PACKAGE / name).is_dir():
            files += sorted((PACKAGE / name).rglob("*.py"))
        elif (PACKAGE / f"{name}.py").is_file():
            files.append(PACKAGE / f"{name}.py")
    modules = []
    for file in files:
        parts = file.relative_to(ROOT).with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_headless_modules_do_not_import_textual() -> None:
    modules = headless_modules()
    assert {"dg_chat.gguf.reader", "dg_chat.text.tokenizer", "dg_chat.text.chat", "dg_chat.engine.events"} <= set(modules)
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_the_check_would_see_textual() -> None:
    """The same subprocess check does notice textual when something imports it."""
    code = "import sys, textual.app\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')[:1])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "['textual']"
