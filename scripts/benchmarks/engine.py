"""`scripts/bench.py engine`: the PyTorch engine against transformers' `generate` on CPU.

Builds one medium random DiffusionGemma with transformers, converts it to GGUF, then times the
same generation (same prompt, seed, steps and canvases; adaptive stopping disabled so both do the
same work) in both engines, interleaved, best of --repeat. Peak memory is measured in fresh
subprocesses: peak RSS minus the RSS after imports, against the GGUF file size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def build(args: argparse.Namespace, out_dir: Path) -> tuple[object, Path]:
    from tests.support.tiny_dg import convert, hf_model

    layer_types = ["full_attention" if (i + 1) % 6 == 0 or i == args.layers - 1 else "sliding_attention"
                   for i in range(args.layers)]
    model = hf_model(vocab_size=args.vocab, hidden=args.hidden, layer_types=layer_types, sliding_window=128,
                     experts=args.experts, top_k=args.top_k, canvas_length=args.canvas, heads=8, head_dim=64,
                     expert_ff=args.hidden // 2, max_positions=8192)
    return model, convert(model, out_dir)


def prompt_ids(args: argparse.Namespace) -> list[int]:
    return torch.randint(5, args.vocab, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()


def run_ours(backend, args: argparse.Namespace, reference_draws: bool = True) -> tuple[float, int, list[int]]:
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.generate import generate

    settings = SamplerSettings(seed=5, max_steps=args.steps, max_canvases=args.canvases, confidence=1e-9,
                               reference_draws=reference_draws)
    start = time.perf_counter()
    *_, finished = generate(backend, prompt_ids(args), settings, end_ids=frozenset(), parse=lambda t: ("", ""))
    return time.perf_counter() - start, finished.stats.forwards, finished.token_ids


def run_reference(model, args: argparse.Namespace) -> tuple[float, list[int]]:
    prompt = torch.tensor([prompt_ids(args)])
    torch.manual_seed(5)
    start = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=args.canvases * args.canvas, max_denoising_steps=args.steps,
                         eos_token_id=[-1], pad_token_id=0, confidence_threshold=1e-9)
    return time.perf_counter() - start, out.sequences[0, args.prompt:].tolist()


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe(args: argparse.Namespace) -> dict:
    """Run in a subprocess: load one engine, generate once, report the peak RSS growth."""
    import transformers  # noqa: F401 - imported in both probes so the baselines compare

    from dg_chat.engine.backends.torch_dg.backend import TorchBackend
    from dg_chat.gguf.reader import open_gguf

    torch.set_num_threads(args.threads)
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current RSS
    baseline = rss_mb("VmRSS")
    if args.probe == "ours":
        engine = TorchBackend(open_gguf(args.gguf), "cpu")
        run_ours(engine, args)
    else:
        from transformers import AutoModelForImageTextToText

        engine = AutoModelForImageTextToText.from_pretrained(Path(args.gguf).parent / "checkpoint").eval()
        run_reference(engine, args)
    # measured while the engine is still alive: its weights (and caches) are part of what stays
    return {"peak_growth_mb": rss_mb("VmHWM") - baseline, "final_growth_mb": rss_mb("VmRSS") - baseline}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py engine")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--canvases", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--probe", choices=("ours", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args)

    from dg_chat.engine.backends.torch_dg.backend import TorchBackend
    from dg_chat.gguf.reader import open_gguf

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, path = build(args, Path(tmp))
        ours_s, fast_s, ref_s, same = [], [], [], True
        for _ in range(args.repeat):  # a fresh backend each time: transformers re-encodes the prompt too
            seconds, forwards, tokens = run_ours(TorchBackend(open_gguf(path), "cpu"), args)
            ours_s.append(seconds)
            fast_s.append(run_ours(TorchBackend(open_gguf(path), "cpu"), args, reference_draws=False)[0])
            seconds, ref_tokens = run_reference(model, args)
            ref_s.append(seconds)
            same &= tokens == ref_tokens
        memory = {}
        for which in ("ours", "reference"):
            out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "engine", *argv,
                                  "--probe", which, "--gguf", str(path)], capture_output=True, text=True, check=True)
            memory[which] = json.loads(out.stdout)
        file_mb = path.stat().st_size / 2**20

    tokens = args.canvases * args.canvas
    best_ours, best_fast, best_ref = min(ours_s), min(fast_s), min(ref_s)
    return {
        "model": {k: getattr(args, k) for k in ("layers", "hidden", "vocab", "experts", "top_k", "canvas")},
        "workload": {"prompt_tokens": args.prompt, "canvases": args.canvases, "steps_per_canvas": args.steps,
                     "threads": args.threads},
        "identical_tokens": same,
        "ours": {"seconds": best_ours, "tokens_per_s": tokens / best_ours, "seconds_per_step": best_ours / forwards},
        "ours_fast_draws": {"seconds": best_fast, "tokens_per_s": tokens / best_fast,
                            "seconds_per_step": best_fast / forwards},
        "transformers": {"seconds": best_ref, "tokens_per_s": tokens / best_ref,
                         "seconds_per_step": best_ref / forwards},
        "speed_ratio": best_ref / best_ours,
        "speed_ratio_fast_draws": best_ref / best_fast,
        # final growth: what stays resident (weights, caches); peak - final: transient activations
        "memory": {"gguf_mb": file_mb, "ours": memory["ours"], "transformers": memory["reference"],
                   "ours_resident_over_file": memory["ours"]["final_growth_mb"] / file_mb,
                   "ours_peak_over_file": memory["ours"]["peak_growth_mb"] / file_mb},
    }
