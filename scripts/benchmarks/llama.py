"""Per-step time of the llama.cpp backend, split into libllama's decode and our Python sampling.

    scripts/bench.py llama [--vocab 32768] [--n-embd 512] [--layers 2] [--prompt 64] [--steps 8]
                           [--algorithms entropy,low_confidence,...] [--temperature 0] [--threads N]

Builds a random Dream GGUF with a realistic vocabulary (the canvas is Dream's 256 tokens), runs
one block per algorithm through the real LlamaBackend and MaskSampler, and times every step:
`decode` is the time spent in libllama (llama_decode, and llama_get_logits, which waits for the
result), `ours` the rest of the step: all of our Python (batch filling, the zero-copy logits view,
the algorithm, the event). Reported per step, averaged over the block (the first steps, with
every position masked, cost the most), with our share of the step, whose goal is <= 5%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.llama import LlamaBackend
from dg_chat.engine.mask_sampling import MaskSampler
from scripts.make_tiny_llama_models import write_model


class TimedLibrary:
    """llama-cpp-python's ctypes module, with the time spent in the calls that compute logits."""

    TIMED = ("llama_decode", "llama_get_logits")

    def __init__(self, lib):
        self._lib = lib
        self.seconds = 0.0

    def __getattr__(self, name):
        function = getattr(self._lib, name)
        if name not in self.TIMED:
            return function

        def timed(*args):
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - started
        return timed


def time_block(backend: LlamaBackend, settings: SamplerSettings) -> list[tuple[float, float]]:
    """(libllama, ours) seconds of every step of one block."""
    sampler = MaskSampler(settings, backend=backend, generator=torch.Generator().manual_seed(0))
    denoiser = sampler.denoise_block(backend, 0)
    steps = []
    while True:
        backend.lib.seconds = 0.0
        started = time.perf_counter()
        try:
            next(denoiser)
        except StopIteration:
            return steps
        total = time.perf_counter() - started
        steps.append((backend.lib.seconds, total - backend.lib.seconds))


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py llama")
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--algorithms", default="entropy,maskgit_plus,topk_margin,origin,low_confidence,rnd1")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="libllama and torch threads (default: all cores)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_model(Path(tmp) / "bench-dream.gguf", "dream", vocab_size=args.vocab, n_embd=args.n_embd,
                           n_layer=args.layers, n_head=8, n_head_kv=4, n_ff=4 * args.n_embd)
        backend = LlamaBackend(path, max_canvases=1, n_threads=args.threads)
        try:
            prompt = torch.randint(0, 256, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
            backend.prefill(prompt)
            backend.lib = TimedLibrary(backend.lib)
            results = {}
            for algorithm in args.algorithms.split(","):
                settings = SamplerSettings(max_steps=args.steps, max_canvases=1, algorithm=algorithm,
                                           temperature=args.temperature, top_p=args.top_p)
                steps = time_block(backend, settings)
                decode = statistics.fmean(d for d, _ in steps)
                ours = statistics.fmean(s for _, s in steps)
                results[algorithm] = {
                    "steps": len(steps),
                    "decode_ms": round(1000 * decode, 2),
                    "ours_ms": round(1000 * ours, 2),
                    "ours_first_step_ms": round(1000 * steps[0][1], 2),
                    "our_share": round(ours / (decode + ours), 4),
                }
            return {
                "model": {"architecture": "dream", "vocab": backend.vocab_size, "n_embd": args.n_embd,
                          "layers": args.layers, "canvas": backend.canvas_length, "prompt": args.prompt,
                          "tokens_per_decode": args.prompt + backend.canvas_length},
                "temperature": args.temperature,
                "top_p": args.top_p,
                "threads": {"llama": args.threads or "all", "torch": torch.get_num_threads()},
                "gpu_offload": backend.gpu_offload,
                "goal": "our_share <= 0.05",
                "results": results,
            }
        finally:
            backend.close()
