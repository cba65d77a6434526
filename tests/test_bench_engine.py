"""`scripts/bench.py engine` compares like with like: every timed run of our engine encodes the
whole prompt, as transformers' `generate` does, instead of reusing a cached prefix."""

from __future__ import annotations

import pytest

from dg_chat.engine.backends.torch_dg.backend import TorchBackend
from tests.support.scripts import load_script

pytest.importorskip("transformers")


def test_every_repeat_encodes_the_whole_prompt(monkeypatch):
    encoded: list[int] = []
    prefill = TorchBackend.prefill
    monkeypatch.setattr(TorchBackend, "prefill", lambda self, ids: encoded.append(prefill(self, ids)) or encoded[-1])
    report = load_script("benchmarks/engine").main(
        ["--layers", "2", "--hidden", "64", "--vocab", "512", "--experts", "4", "--top-k", "2", "--canvas", "8",
         "--canvases", "1", "--steps", "2", "--prompt", "16", "--threads", "1", "--repeat", "2"])
    assert encoded == [16] * 4  # 2 repeats x (reference draws, fast draws)
    assert report["identical_tokens"]
