"""`scripts/bench.py demo`: quality and speed of the shipped demo model (models/demo.gguf) on this machine.

Quality: the held-out questions and out-of-domain prompts of scripts/train_demo.py `evaluate`
(3 seeds, default sampler). Speed: the time to load the model (what `--demo` and the first-run
screen wait for) and generated tokens per second on the CPU over the same turns; with
`--baseline OLD.gguf` (e.g. the previous demo model: `git show REV:models/demo.gguf > old.gguf`)
the same figures of that file on the same prompts and seeds, and the ratio.

Settled positions: over the same turns (first seed), at the input of each self-conditioned step,
the share of canvas positions that the Triton path's self-conditioning takes through its shortcut
in bf16 (`gemm.SettledRows`: candidates of p >= tail / K holding at least 1 - 2^-9 of the mass),
and the share of a 256-row canvas's row tiles that the dense kernel would still run (two of 128
rows, its GPU configuration). The candidates are the two largest of each tile of the fused
sampler; its GPU tiles of 2048 columns give the demo's 4,096-token vocabulary 4 of them, where
DiffusionGemma's 262,144 tokens get 256. So the share is given for both: `gpu_tiles` (what a GPU
run of the demo model does) and `tiles_as_at_262144` (the demo's vocabulary cut into 128 tiles,
256 candidates, as the real vocabulary is), beside `top_1` (the argmax alone).
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
    denoise, tail = engine.backend.denoise, SETTLED_TAIL[torch.bfloat16]
    layouts = {"top_1": None, "gpu_tiles": 2048, "tiles_as_at_262144": engine.backend.vocab_size // 128}
    shares: dict[str, list[float]] = {name: [] for name in layouts}

    def recording_denoise(canvas, self_cond):
        if self_cond is not None:
            probs = self_cond.probs if self_cond.probs is not None else self_cond.logits.softmax(-1)
            probs = probs.double()
            for name, tile in layouts.items():
                if tile is None:
                    settled = probs.max(-1).values >= 1 - tail
                else:  # the two largest of each tile; those of p >= tail / K count
                    tiles = probs.view(len(probs), -1, min(tile, probs.shape[1]))
                    top = tiles.topk(2, dim=-1).values
                    settled = top.where(top >= tail / top[0].numel(), 0.0).sum((-1, -2)) >= 1 - tail
                shares[name].append(settled.double().mean().item())
        return denoise(canvas, self_cond)

    engine.backend.denoise = recording_denoise
    try:
        for q, a in split.held_out:
            train_demo.answer(engine, q, a, seed)
    finally:
        engine.close()
    result: dict = {"self_conditioned_steps": len(shares["top_1"])}
    for name, values in shares.items():
        dense_tiles = [math.ceil((1 - share) * 256 / 128) / 2 for share in values]
        result[name] = {"mean_settled_share": sum(values) / len(values),
                        "mean_dense_row_tiles_at_256": sum(dense_tiles) / len(dense_tiles)}
    return result


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
