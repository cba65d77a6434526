#!/usr/bin/env python3
"""Fetch the public test data the test suite needs, once, into tests/.cache/.

- llama.cpp's vocabulary GGUFs (Gemma 4, and the byte-level BPE ones: gpt-2, qwen2, llama-bpe)
  and their tokenizer test cases (.inp/.out), taken from the llama-cpp-python 0.3.36 sdist on PyPI
  (the sdist that setup.sh builds from is reused).

Run it directly or let the tests call `ensure_llama_vocab(name)` (fixtures in tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "tests" / ".cache"
LLAMA_SDIST = "llama_cpp_python-0.3.36.tar.gz"


def _sdist() -> Path:
    build_cache = Path(os.environ.get("DG_CHAT_BUILD_CACHE")
                       or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dg-chat" / "build")
    for candidate in (build_cache / "sdist" / LLAMA_SDIST, CACHE / LLAMA_SDIST):
        if candidate.is_file():
            return candidate
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(CACHE), "llama-cpp-python==0.3.36"], check=True)
    return CACHE / LLAMA_SDIST


def ensure_gemma4_vocab() -> Path:
    """Path of ggml-vocab-gemma-4.gguf (its .inp/.out lie beside it)."""
    return ensure_llama_vocab("gemma-4")


def ensure_llama_vocab(name: str) -> Path:
    """Path of llama.cpp's models/ggml-vocab-NAME.gguf (its .inp/.out lie beside it)."""
    vocab_files = tuple(f"ggml-vocab-{name}.gguf{suffix}" for suffix in ("", ".inp", ".out"))
    out = CACHE / "vocab"
    if all((out / file).is_file() for file in vocab_files):
        return out / vocab_files[0]
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_sdist()) as tar:
        for member in tar.getmembers():
            file = member.name.rsplit("/", 1)[-1]
            if file in vocab_files and "/vendor/llama.cpp/models/" in member.name:
                data = tar.extractfile(member).read()
                # write then rename, so an interrupted extraction never leaves a half file
                with tempfile.NamedTemporaryFile(dir=out, delete=False) as tmp:
                    tmp.write(data)
                os.replace(tmp.name, out / file)
    missing = [file for file in vocab_files if not (out / file).is_file()]
    if missing:
        raise RuntimeError(f"{missing} not found in {LLAMA_SDIST}")
    return out / vocab_files[0]


if __name__ == "__main__":
    for vocab in ("gemma-4", "gpt-2", "qwen2", "llama-bpe"):
        print(ensure_llama_vocab(vocab))
