"""Dequantisation speed: dg_chat.gguf.dequant (torch) vs gguf.quants (numpy), per type.

    scripts/bench.py dequant [--rows 1024] [--cols 4096] [--repeat 5] [--threads 1] [--device cpu]

Speeds are MB/s of quantized bytes in (best of --repeat); ratio = ours / gguf.quants. numpy
runs on one core, so torch gets one thread too unless --threads says otherwise. F32 is left
out: both sides merely reinterpret the bytes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from gguf import quants
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.gguf.dequant import dequantize
from tests.support.gguf_samples import K_SCALE_OFFSETS, QUANTIZABLE, quantized

TYPES = [t for t in (*QUANTIZABLE, *K_SCALE_OFFSETS) if t != Q.F32]


def best_seconds(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up (allocations, CUDA kernels)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py dequant")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)

    results = {}
    for qtype in TYPES:
        raw = quantized(qtype, (args.rows, args.cols), rng)
        raw_t = torch.from_numpy(raw).to(device)
        megabytes = raw.nbytes / 1e6
        ref = best_seconds(partial(quants.dequantize, raw, qtype), args.repeat, lambda: None)
        ours = best_seconds(partial(dequantize, raw_t, qtype), args.repeat, sync)
        results[qtype.name] = {
            "MB": round(megabytes, 2),
            "gguf_quants_MB_s": round(megabytes / ref, 1),
            "ours_MB_s": round(megabytes / ours, 1),
            "ratio": round(ref / ours, 2),
        }
    return {
        "benchmark": "dequant",
        "shape": [args.rows, args.cols],
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "types": results,
    }
