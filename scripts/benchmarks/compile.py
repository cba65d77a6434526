"""`scripts/bench.py compile`: what ptxas makes of every Triton kernel variant the fast path
launches on a GPU, compiled offline (no GPU needed) for sm_89 (RTX 4090) and sm_90 (H100/H200).

The launches are those of prefills, a block's first canvas and two fused-sampler denoising steps
of a model with the published 26B-A4B's widths in two layers, computing in bf16 as on CUDA, with
every launch configuration chosen as on a GPU (tests/support/cuda_compile.py; the kernels are
not run). `--tiny` adds the tiny Q4_K_M test model in float32 and bf16 (needs transformers).

Per variant: registers, stack and local bytes per thread (spills), shared memory, compile time,
or the compiler's error. The summary counts variants and failures per target and lists the
variants that spill. Numbers are the compiler's, not timings.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

# the recording drives the host code on the CPU: it needs the kernel modules loaded interpreted
os.environ["TRITON_INTERPRET"] = "1"


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="scripts/bench.py compile", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="sm_89,sm_90",
                        help="comma-separated sm_NN compute capabilities (default: sm_89,sm_90)")
    parser.add_argument("--tiny", action="store_true", help="also the tiny Q4_K_M model in float32 and bf16")
    args = parser.parse_args(argv)

    import torch

    from tests.support.cuda_compile import (PublishedWidths, cuda_backend_unavailable, record_step, run_compile,
                                            triton_backend)

    if reason := cuda_backend_unavailable():
        return {"error": reason}
    torch.set_num_threads(1)
    targets = {name: int(name.removeprefix("sm_")) for name in args.targets.split(",")}
    launches = record_step(PublishedWidths(), "published-bf16")
    if args.tiny:
        from tests.support.tiny_dg import tiny_q4_k_m

        with tempfile.TemporaryDirectory() as tmp:
            path = tiny_q4_k_m(Path(tmp), canvas_length=256, vocab_size=65536)
            for dtype, name in ((torch.float32, "tiny-fp32"), (torch.bfloat16, "tiny-bf16")):
                launches += record_step(triton_backend(path, dtype), name)
    variants = run_compile(launches, targets)
    summary = {}
    for target in targets:
        mine = [v for v in variants if v.target == target]
        compiled = [v for v in mine if not v.error]
        summary[target] = {
            "variants": len(mine),
            "failed": [v.describe() for v in mine if v.error],
            "max_registers": max((v.registers or 0 for v in compiled), default=0),
            "max_shared_bytes": max((v.shared or 0 for v in compiled), default=0),
            "spilling": [f"{v.describe()}: stack {v.stack} B, local {v.local} B"
                         for v in compiled if (v.stack or 0) + (v.local or 0) > 0],
        }
    return {
        "measured": "offline triton.compile + cuobjdump --dump-resource-usage, per distinct launch specialisation",
        "launches": len(launches),
        "summary": summary,
        "variants": [{"target": v.target, "kernel": v.kernel.split(":")[1], "constexprs": v.constexprs,
                      "signature": v.signature, "divisible_by_16": v.divisible_by_16, "registers": v.registers,
                      "stack_bytes": v.stack, "local_bytes": v.local, "shared_bytes": v.shared,
                      "compile_s": v.compile_s, "launched_in": v.phases, "error": v.error} for v in variants],
    }
