"""TUI overhead: tokens/s of a turn shown live in the TUI (headless) vs the bare engine.

    scripts/bench.py tui --model PATH [--prompt TEXT] [--runs N] [--steps N] [--seed N]

Both sides answer the same prompt with the same seed on the same loaded engine, alternately,
after one warm-up turn each. Bare: iterate Engine.turn. TUI: DgChatApp.run_test (headless, so
every frame is still rendered), from pressing Enter until the app has handled the turn's end;
this includes the canvas, the Markdown stream and the history writes. Goal: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dg_chat.config import SamplerSettings, Settings, load_settings
from dg_chat.engine.events import TurnFailed, TurnFinished
from dg_chat.errors import DgChatError
from dg_chat.store import Store
from dg_chat.text.chat import Message
from dg_chat.tui.app import DgChatApp, default_engine_factory
from dg_chat.tui.widgets.prompt import Prompt

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def bare_turn(engine: Any, prompt: str, sampler: SamplerSettings) -> tuple[int, float]:
    """(tokens, seconds) of one turn iterated directly."""
    start = time.perf_counter()
    tokens = 0
    for event in engine.turn([Message("user", prompt)], sampler):
        if isinstance(event, TurnFailed):
            raise DgChatError(f"the turn failed: {event.error}")
        if isinstance(event, TurnFinished):
            tokens = event.stats.tokens
    return tokens, time.perf_counter() - start


async def tui_turn(app: DgChatApp, prompt: str) -> tuple[int, float]:
    """(tokens, seconds) of one turn sent through the app, in a new chat so the prompt is the same."""
    await app.action_new_chat()
    prompt_widget = app.query_one(Prompt)
    prompt_widget.text = prompt
    start = time.perf_counter()
    prompt_widget.action_send()  # what Enter does, without the test harness waiting on every widget
    while app.generating or app.chat_id is None:
        await asyncio.sleep(0.002)  # a few ms of a multi-second turn
    seconds = time.perf_counter() - start
    answer = app.store.messages(app.chat_id)[-1]
    if answer.status != "complete":
        raise DgChatError(f"the turn in the TUI ended {answer.status}: {answer.error}")
    return answer.stats["tokens"], seconds


async def run_both(engine: Any, prompt: str, sampler: SamplerSettings, runs: int) -> tuple[list, list]:
    bare: list[tuple[int, float]] = []
    tui: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as workdir:
        store = Store(Path(workdir) / "bench.sqlite3")
        # a configured model (the engine is given), so the app skips its first-run screen
        app = DgChatApp(Settings(model=engine.name, sampler=sampler), store=store, engine_factory=lambda _: engine,
                        export_dir=Path(workdir))
        async with app.run_test(size=(120, 40)):
            while app.engine is None:
                await asyncio.sleep(0.01)
            for run in range(runs + 1):  # run 0 warms both up and is not counted
                results = bare_turn(engine, prompt, sampler), await tui_turn(app, prompt)
                if run:
                    bare.append(results[0])
                    tui.append(results[1])
        store.close()
    return bare, tui


def measure(engine: Any, prompt: str = PROMPT, sampler: SamplerSettings | None = None, runs: int = 3) -> dict:
    bare, tui = asyncio.run(run_both(engine, prompt, sampler or SamplerSettings(seed=0), runs))
    bare_speed = statistics.median(tokens / seconds for tokens, seconds in bare)
    tui_speed = statistics.median(tokens / seconds for tokens, seconds in tui)
    return {
        "benchmark": "tui",
        "model": engine.name,
        "backend": engine.backend.name,
        "device": engine.backend.device,
        "runs": runs,
        "tokens_bare": [tokens for tokens, _ in bare],
        "tokens_tui": [tokens for tokens, _ in tui],
        "bare_tokens_per_second": round(bare_speed, 2),
        "tui_tokens_per_second": round(tui_speed, 2),
        "ratio": round(tui_speed / bare_speed, 4),
        "goal": 0.95,
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="scripts/bench.py tui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="PATH", help="GGUF file (or catalog name)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="most denoising steps per block")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = load_settings({"model": args.model, "max_steps": args.steps, "seed": args.seed})
    engine = default_engine_factory(settings)  # the app closes it when it exits
    return measure(engine, args.prompt, settings.sampler, args.runs)
