"""Opening llama.cpp's real Gemma 4 vocabulary GGUF (262,144 tokens, 514,906 merges):
dg_chat.gguf.reader vs gguf.GGUFReader.

    scripts/bench.py gguf [--repeat 5] [--path FILE]

Both sides end with the token and merge strings as Python lists (what the tokenizer needs);
for GGUFReader that is its constructor plus `contents()`. Ours is the best of --repeat runs,
GGUFReader (~30-40 s) runs once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gguf

from dg_chat.gguf.reader import open_gguf
from scripts.fetch_test_data import ensure_gemma4_vocab

STRING_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")


def open_ours(path: Path) -> list[list[str]]:
    with open_gguf(path) as vocab:
        return [vocab.get(key) for key in STRING_ARRAYS]


def open_reference(path: Path) -> list[list[str]]:
    reader = gguf.GGUFReader(path)
    return [reader.fields[key].contents() for key in STRING_ARRAYS]


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py gguf")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--path", type=Path, help="GGUF file (default: the Gemma 4 vocabulary test file)")
    args = parser.parse_args(argv)
    path = args.path or ensure_gemma4_vocab()

    ours = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        strings = open_ours(path)
        ours = min(ours, time.perf_counter() - start)
    start = time.perf_counter()
    ref_strings = open_reference(path)
    reference = time.perf_counter() - start
    if strings != ref_strings:
        raise SystemExit("the readers disagree on the token/merge strings")
    return {
        "benchmark": "gguf",
        "file": str(path),
        "strings": [len(s) for s in strings],
        "ours_s": round(ours, 3),
        "gguf_reader_s": round(reference, 2),
        "ratio": round(reference / ours, 1),
    }
