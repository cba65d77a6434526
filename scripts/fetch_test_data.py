#!/usr/bin/env python3
"""Fetch the public test data the test suite needs, once, into tests/.cache/.

- llama.cpp's Gemma 4 vocabulary GGUF and its tokenizer test cases (.inp/.out), taken from
  the llama-cpp-python 0.3.36 sdist on PyPI (the sdist that setup.sh builds from is reused).

Run it directly or let the tests call `ensure_gemma4_vocab()`.
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
VOCAB_FILES = ("ggml-vocab-gemma-4.gguf", "ggml-vocab-gemma-4.gguf.inp", "ggml-vocab-gemma-4.gguf.out")


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
    out = CACHE / "vocab"
    if all((out / name).is_file() for name in VOCAB_FILES):
        return out / VOCAB_FILES[0]
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(_sdist()) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name in VOCAB_FILES and "/vendor/llama.cpp/models/" in member.name:
                data = tar.extractfile(member).read()
                # write then rename, so an interrupted extraction never leaves a half file
                with tempfile.NamedTemporaryFile(dir=out, delete=False) as tmp:
                    tmp.write(data)
                os.replace(tmp.name, out / name)
    missing = [name for name in VOCAB_FILES if not (out / name).is_file()]
    if missing:
        raise RuntimeError(f"{missing} not found in {LLAMA_SDIST}")
    return out / VOCAB_FILES[0]


if __name__ == "__main__":
    print(ensure_gemma4_vocab())
