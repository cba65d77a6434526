"""`scripts/bench.py demo`: quality and speed of the shipped demo model (models/demo.gguf) on this machine.

Quality: the held-out questions and out-of-domain prompts of scripts/train_demo.py `evaluate`
(3 seeds, default sampler). Speed: the time to load the model (what `--demo` and the first-run
screen wait for) and generated tokens per second on the CPU over the same turns; with
`--baseline OLD.gguf` (e.g. the previous demo model: `git show REV:models/demo.gguf > old.gguf`)
the same figures of that file on the same prompts and seeds, and the ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tests.support.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def speed(model: Path, split, seeds: tuple[int, ...]) -> dict:
    """Load time and tokens per second over the held-out questions, once per seed."""
    from dg_chat.config import Settings
    from dg_chat.engine.loader import load_engine

    train_demo = load_script("train_demo")
    started = time.perf_counter()
    engine = load_engine(Settings(model=str(model), device="cpu"))
    load_s = time.perf_counter() - started
    try:
        answers = [train_demo.answer(engine, q, a, seed) for seed in seeds for q, a in split.held_out]
    finally:
        engine.close()
    seconds = sum(a.seconds for a in answers)
    steps = sum(sum(a.steps) for a in answers)
    return {"model": str(model), "file_mb": model.stat().st_size / 1e6, "load_seconds": load_s,
            "tokens": sum(a.tokens for a in answers), "tokens_per_s": sum(a.tokens for a in answers) / seconds,
            "seconds_per_step": seconds / steps}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py demo")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "demo.gguf")
    parser.add_argument("--baseline", type=Path, help="another demo GGUF to compare speed with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    args = parser.parse_args(argv)

    train_demo, demo_guide = load_script("train_demo"), load_script("demo_guide")
    torch.set_num_threads(args.threads)
    seeds = tuple(range(1, args.seeds + 1))
    split = demo_guide.split(demo_guide.load())
    quality = train_demo.evaluate(args.model, ROOT / "models" / "demo-words.txt.gz", split, seeds)
    result = {"threads": args.threads, "seeds": list(seeds), "quality": quality.figures(),
              "speed": speed(args.model, split, seeds[:1])}
    if args.baseline:
        result["baseline_speed"] = speed(args.baseline, split, seeds[:1])
        result["tokens_per_s_ratio"] = result["speed"]["tokens_per_s"] / result["baseline_speed"]["tokens_per_s"]
    return result
