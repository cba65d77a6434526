"""Shared test setup: one torch thread, isolated dirs, no network to the Hub, test data."""

from __future__ import annotations

import os
from pathlib import Path

# Triton decides at import time whether kernels are interpreted: set it before any kernel module
# loads (CPU-only CI; a GPU machine can run the suite with TRITON_INTERPRET=0).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from tests.support.scripts import load_script

torch.set_num_threads(1)  # 2-core CI machines: two intra-op threads oversubscribe badly


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config/data/cache dirs and never reaches the real Hub."""
    home = tmp_path / "dg-home"
    for name in ("CONFIG", "DATA", "CACHE"):
        monkeypatch.setenv(f"DG_CHAT_{name}_DIR", str(home / name.lower()))
    monkeypatch.delenv("DG_CHAT_CONFIG", raising=False)
    for var in [v for v in os.environ if v.startswith("DG_CHAT_") and not v.endswith("_DIR")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def gemma4_vocab() -> Path:
    """llama.cpp's real Gemma 4 vocabulary GGUF (262,144 tokens, no tensors)."""
    return load_script("fetch_test_data").ensure_gemma4_vocab()


@pytest.fixture(scope="session")
def llama_vocab():
    """Function NAME -> path of llama.cpp's models/ggml-vocab-NAME.gguf (.inp/.out beside it)."""
    return load_script("fetch_test_data").ensure_llama_vocab


@pytest.fixture(scope="session")
def tiny_chat_gguf(tmp_path_factory, gemma4_vocab) -> Path:
    """A tiny random DiffusionGemma GGUF with the real Gemma 4 tokenizer and chat template:
    everything a chat needs, but gibberish answers (16-token canvas, 2 layers)."""
    from tests.support.tiny_dg import convert, hf_model

    model = hf_model(vocab_size=262144, canvas_length=16)
    return convert(model, tmp_path_factory.mktemp("tiny-chat"), qtype="f16", vocab=gemma4_vocab)


@pytest.fixture(scope="session")
def gemma4_metadata(gemma4_vocab: Path) -> dict:
    from dg_chat.gguf.reader import open_gguf

    with open_gguf(gemma4_vocab) as f:
        return f.metadata


@pytest.fixture(scope="session")
def gemma4(gemma4_metadata: dict):
    """dg-chat's Tokenizer for the real Gemma 4 vocabulary (built once per session)."""
    from dg_chat.text.tokenizer import Tokenizer

    return Tokenizer.from_metadata(gemma4_metadata)


@pytest.fixture
def server():
    """A fake vLLM-style OpenAI server on 127.0.0.1 (tests/support/fake_openai.py), closed after the test."""
    from tests.support.fake_openai import FakeOpenAI

    fake = FakeOpenAI()
    yield fake
    fake.close()
