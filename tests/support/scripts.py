"""The repository's scripts (scripts/NAME.py) imported as modules, once per test session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py; NAME may name a subfolder ("benchmarks/tui")."""
    module_name = "scripts." + name.replace("/", ".")
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[module_name]
