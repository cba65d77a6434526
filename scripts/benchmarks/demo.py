"""`scripts/bench.py demo`: quality and speed of the shipped demo model (models/demo.gguf) on this machine.

Quality: the held-out questions and out-of-domain prompts of scripts/train_demo.py `evaluate`
(3 seeds, default sampler). Speed: the time to load the model (what `--demo` and the first-run
screen wait for) and generated tokens per second on the CPU over the same turns; with
`--baseline OLD.gguf` (e.g. the previous demo model: `git show REV:models/demo.gguf > old.gguf`)
the same figures of that file on the same prompts and seeds, and the ratio.

Settled positions: over the same turns (first seed), the share of canvas positions whose argmax
holds at least 1 - 2^-9 of the mass at the input of a self-conditioned step, the positions that
the Triton path's self-conditioning takes through its shortcut in bf16 (`gemm.SettledRows`), and
the share of a 256-row canvas's row tiles that the dense kernel would still run (two of 128 rows,
its GPU configuration).
"""

from __future__ import annotations

import argparse
import math
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


def settled_positions(model: Path, split, seed: int) -> dict:
    """The share of positions settled for bf16's shortcut at each self-conditioned step."""
    from dg_chat.config import Settings
    from dg_chat.engine.backends.torch_dg.kernels.triton_ops import SETTLED_TAIL
    from dg_chat.engine.loader import load_engine

    train_demo = load_script("train_demo")
    engine = load_engine(Settings(model=str(model), device="cpu"))
    denoise, shares = engine.backend.denoise, []

    def recording_denoise(canvas, self_cond):
        if self_cond is not None:
            probs = self_cond.probs if self_cond.probs is not None else self_cond.logits.softmax(-1)
            shares.append((probs.max(-1).values >= 1 - SETTLED_TAIL[torch.bfloat16]).float().mean().item())
        return denoise(canvas, self_cond)

    engine.backend.denoise = recording_denoise
    try:
        for q, a in split.held_out:
            train_demo.answer(engine, q, a, seed)
    finally:
        engine.close()
    dense_tiles = [math.ceil((1 - share) * 256 / 128) / 2 for share in shares]
    return {"self_conditioned_steps": len(shares), "mean_settled_share": sum(shares) / len(shares),
            "mean_dense_row_tiles_at_256": sum(dense_tiles) / len(dense_tiles)}


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
              "speed": speed(args.model, split, seeds[:1]),
              "settled_positions": settled_positions(args.model, split, seeds[0])}
    if args.baseline:
        result["baseline_speed"] = speed(args.baseline, split, seeds[:1])
        result["tokens_per_s_ratio"] = result["speed"]["tokens_per_s"] / result["baseline_speed"]["tokens_per_s"]
    return result
