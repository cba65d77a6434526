"""scripts/benchmarks/tui.py against the scripted engine (the real engine is not available here)."""

from __future__ import annotations

import pytest

from dg_chat.config import SamplerSettings
from tests.support.scripts import load_script
from tests.tui.fake_engine import ScriptedEngine


def test_tui_benchmark_compares_the_app_with_the_bare_engine():
    bench = load_script("benchmarks/tui")
    engine = ScriptedEngine(lambda m: "word " * 60, step_delay=0.002)
    result = bench.measure(engine, "hello", SamplerSettings(seed=0), runs=2)
    assert result["tokens_bare"] == result["tokens_tui"] == [62, 62]  # 61 words and spaces + end token
    assert result["bare_tokens_per_second"] > 0 and result["tui_tokens_per_second"] > 0
    # the ratio of the unrounded speeds, rounded to 4 digits; the speeds are rounded to 2 decimals
    speeds = result["tui_tokens_per_second"] / result["bare_tokens_per_second"]
    assert result["ratio"] == pytest.approx(speeds, abs=1e-4)
    assert len(engine.requests) == 6  # warm-up + 2 runs, each once bare and once through the app
    assert engine.closed  # the app closes the engine it was given
