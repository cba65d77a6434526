"""`scripts/bench.py demo`: speed of the shipped demo model (models/demo.gguf) on this machine.

Answers the 20 fixed prompts of scripts/train_demo.py (seeds 1..20, default sampler, adaptive
stopping on) with dg-chat's engine on the CPU, best of --repeat, and reports generated tokens
per second, seconds per denoising step and the prompt encoding time.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def _prompts() -> list[str]:
    spec = importlib.util.spec_from_file_location("train_demo", ROOT / "scripts" / "train_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look the module up while they are made
    spec.loader.exec_module(module)
    return module.PROMPTS


def run(engine, prompts: list[str], fast_draws: bool) -> dict:
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.events import TurnFinished
    from dg_chat.text.chat import Message

    tokens = steps = 0
    denoise_s = prompt_s = 0.0
    started = time.perf_counter()
    for seed, prompt in enumerate(prompts, 1):
        sampler = SamplerSettings(seed=seed, reference_draws=not fast_draws)
        for event in engine.turn([Message("user", prompt)], sampler):
            if isinstance(event, TurnFinished):
                stats = event.stats
                tokens += stats.tokens
                steps += stats.forwards
                denoise_s += stats.seconds
                prompt_s += stats.prompt_seconds
    return {"seconds": time.perf_counter() - started, "tokens": tokens, "steps": steps,
            "tokens_per_s": tokens / denoise_s, "seconds_per_step": denoise_s / steps,
            "prompt_ms_per_turn": 1000 * prompt_s / len(prompts)}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py demo")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.gguf")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from dg_chat.config import Settings
    from dg_chat.engine.loader import load_engine

    torch.set_num_threads(args.threads)
    prompts = _prompts()
    started = time.perf_counter()
    engine = load_engine(Settings(model=str(args.model), device="cpu"))
    load_s = time.perf_counter() - started
    try:
        runs = {mode: min((run(engine, prompts, mode == "fast_draws") for _ in range(args.repeat)),
                          key=lambda r: r["seconds"]) for mode in ("reference_draws", "fast_draws")}
    finally:
        engine.close()
    return {
        "model": str(args.model), "file_mb": args.model.stat().st_size / 1e6,
        "canvas_length": engine.backend.canvas_length, "threads": args.threads, "load_seconds": load_s,
        "workload": f"{len(prompts)} one-turn prompts, seeds 1..{len(prompts)}, default sampler",
        **runs,
    }
