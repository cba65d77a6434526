"""Tokenizer load time: building from GGUF metadata vs loading a cached tokenizer.json.

`scripts/bench.py tokenizer [--gguf PATH] [--repeat N]` (default: llama.cpp's Gemma 4 vocabulary,
262,144 tokens and 514,906 merges). The reference is the cache a build could be replaced with:
`tokenizers.Tokenizer.from_file` of the same tokenizer saved as JSON; build_over_json_load < 1
means building is faster than such a cache would be.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from dg_chat.gguf.reader import open_gguf
from dg_chat.text.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent.parent


def _default_gguf() -> Path:
    spec = importlib.util.spec_from_file_location("fetch_test_data", ROOT / "scripts" / "fetch_test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_gemma4_vocab()


def _median_seconds(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py tokenizer")
    parser.add_argument("--gguf", type=Path, help="a GGUF with tokenizer metadata (default: Gemma 4 vocab)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    path = args.gguf or _default_gguf()

    read_s = _median_seconds(lambda: open_gguf(path).metadata, args.repeat)
    metadata = open_gguf(path).metadata
    build_s = _median_seconds(lambda: Tokenizer.from_metadata(metadata), args.repeat)
    tokenizer = Tokenizer.from_metadata(metadata)
    pieces_s = _median_seconds(lambda: Tokenizer.pieces.func(tokenizer), args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        cached = Path(tmp) / "tokenizer.json"
        tokenizer._backend.save(str(cached))
        json_load_s = _median_seconds(lambda: HFTokenizer.from_file(str(cached)), args.repeat)
        json_mb = cached.stat().st_size / 1e6

    text = "The quick brown fox jumps over the lazy dog. Grüße, 你好 🚀\n" * 2000
    encode_s = _median_seconds(lambda: tokenizer.encode(text), args.repeat)
    n_tokens = len(tokenizer.encode(text))
    return {
        "gguf": str(path),
        "vocab_size": tokenizer.vocab_size,
        "merges": len(metadata.get("tokenizer.ggml.merges", [])),
        "read_metadata_s": round(read_s, 3),
        "build_s": round(build_s, 3),
        "pieces_s": round(pieces_s, 3),
        "json_cache_mb": round(json_mb, 1),
        "json_load_s": round(json_load_s, 3),
        "build_over_json_load": round(build_s / json_load_s, 2),
        "encode_tokens_per_s": round(n_tokens / encode_s),
    }
