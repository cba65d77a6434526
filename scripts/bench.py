#!/usr/bin/env python3
"""Benchmarks: `scripts/bench.py NAME [options]` prints one JSON object.

Each benchmark lives in scripts/benchmarks/NAME.py with `main(argv) -> dict`; results compare
against a reference run on the same machine (ratios), never against fixed numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    available = sorted(p.stem for p in (HERE / "benchmarks").glob("*.py") if not p.stem.startswith("_"))
    if len(sys.argv) < 2 or sys.argv[1] not in available:
        print(f"usage: scripts/bench.py {{{','.join(available)}}} [options]", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE.parent))
    spec = importlib.util.spec_from_file_location(sys.argv[1], HERE / "benchmarks" / f"{sys.argv[1]}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(json.dumps(module.main(sys.argv[2:]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
