"""`scripts/bench.py compile`: what ptxas makes of every Triton kernel variant the fast path
launches on a GPU, compiled offline (no GPU needed) for sm_89 (RTX 4090) and sm_90 (H100/H200).

The launches are those of prefills, a block's first canvas and two fused-sampler denoising steps
of a model with the published 26B-A4B's widths in two layers, computing in bf16 as on CUDA, with
every launch configuration chosen as on a GPU (tests/support/cuda_compile.py; the kernels are
not run). `--tiny` adds the tiny Q4_K_M test model in float32 and bf16 (needs transformers);
`--int8` the published widths' step with int8 activations (`TritonOps(int8_activations=True)`).

Per variant: registers, stack and local bytes per thread (spills), shared memory, compile time,
or the compiler's error. The summary counts variants and failures per target and lists the
variants that spill. Numbers are the compiler's, not timings.

`--sass` adds the K-loop cost of the quantised GEMMs (`SASS_CASES`, bf16 and int8 activations:
quantised once by `gemm.quantize_activations` for linear and linear_glu, inside the K-loop for the
MoE experts) on sm_89: each kernel is launched with its GPU configuration (recorded, not run),
compiled to a cubin and disassembled (cuobjdump -sass). The K-loop is the longest backward branch (target
address below the branch's own) whose span holds a tensor-core instruction (HMMA/IMMA); its
instructions are counted from the branch target up to and including the branch (everything
ptxas emitted there, NOPs included; the software-pipelined steady state with num_stages).
Per weight element = count × 32 × num_warps / (weight tiles × BLOCK_N × BLOCK_K): thread
instructions that one iteration spends per weight element it reads (two tiles per iteration
for the GeGLU kernels), for the program's whole BLOCK_M row tile; "per element, all rows"
multiplies it by the row tiles of the case's M (each unpacks the weights again).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if __name__ != "__main__":  # run as a script it is the SASS child (`sass_k_loop`), which compiles for real
    # the recording drives the host code on the CPU: it needs the kernel modules loaded interpreted
    os.environ["TRITON_INTERPRET"] = "1"

SASS_CASES = [  # (kernel, weight types (gate_up, down for the experts), M: rows per launch)
    ("linear", ("Q4_K",), 256), ("linear", ("Q5_0",), 256), ("linear", ("Q8_0",), 256), ("linear", ("Q6_K",), 256),
    ("linear_glu", ("Q4_K",), 256), ("experts", ("Q4_K", "Q5_0"), 32), ("experts", ("Q4_K", "Q8_0"), 32),
    ("softmax_matmul", ("Q6_K",), 256),
]
"""The GEMMs `--sass` counts, each at its GPU configuration for M rows: linear and linear_glu for
the 256-row canvas (bf16: BLOCK_M 64 and 32; int8: one 256-row tile, `gemm._q8_linear_config`
and `_q8_linear_glu_config`), the MoE experts with one full 32-row block per expert (32 tokens,
top-1, one expert), and dense self-conditioning (softmax_matmul: the [V, K] embedding tile is
the weight tile, contracted over its rows)."""
HIDDEN, WIDTH = 2816, 704


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="scripts/bench.py compile", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="sm_89,sm_90",
                        help="comma-separated sm_NN compute capabilities (default: sm_89,sm_90)")
    parser.add_argument("--tiny", action="store_true", help="also the tiny Q4_K_M model in float32 and bf16")
    parser.add_argument("--int8", action="store_true", help="also the published widths with int8 activations (W4A8)")
    parser.add_argument("--sass", action="store_true",
                        help="also sm_89 SASS instructions per weight element of the quantised GEMMs' K-loops")
    args = parser.parse_args(argv)

    import torch

    from tests.support.cuda_compile import (
        PublishedWidths,
        cuda_backend_unavailable,
        record_step,
        run_compile,
        triton_backend,
    )

    if reason := cuda_backend_unavailable():
        return {"error": reason}
    torch.set_num_threads(1)
    targets = {name: int(name.removeprefix("sm_")) for name in args.targets.split(",")}
    launches = record_step(PublishedWidths(), "published-bf16")
    if args.int8:
        launches += record_step(PublishedWidths(int8_activations=True), "published-bf16-int8")
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
    result = {
        "measured": "offline triton.compile + cuobjdump --dump-resource-usage, per distinct launch specialisation",
        "launches": len(launches),
        "summary": summary,
        "variants": [{"target": v.target, "kernel": v.kernel.split(":")[1], "constexprs": v.constexprs,
                      "signature": v.signature, "divisible_by_16": v.divisible_by_16, "registers": v.registers,
                      "stack_bytes": v.stack, "local_bytes": v.local, "shared_bytes": v.shared,
                      "compile_s": v.compile_s, "launched_in": v.phases, "error": v.error} for v in variants],
    }
    if args.sass:
        result["sass_k_loop"] = sass_k_loop()
    return result


def _record_sass_cases() -> list[dict[str, Any]]:
    """The GEMM launches of `SASS_CASES` in bf16 with bf16 and int8 activations (INT8_TYPES only), each as a
    `Launch` dict with a label, recorded with the GPU launch configuration (never run)."""
    from dataclasses import asdict

    import torch
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

    from dg_chat.engine.backends.torch_dg.kernels import gemm, moe
    from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import INT8_TYPES, RawWeight
    from tests.support.cuda_compile import record_gpu_launches

    def weight(qtype: str, *shape: int) -> RawWeight:
        block, size = GGML_QUANT_SIZES[Q[qtype]]
        data = torch.zeros(*shape[:-1], shape[-1] // block * size, dtype=torch.uint8)
        return RawWeight(data, int(Q[qtype]), shape[-1])

    cases, seen = [], set()
    for kernel, types, m in SASS_CASES:
        int8_path = kernel != "softmax_matmul" and all(Q[t] in INT8_TYPES for t in types)
        for int8 in (False, True) if int8_path else (False,):
            x = torch.zeros(m, HIDDEN, dtype=torch.bfloat16)
            with record_gpu_launches() as launches:
                a = gemm.quantize_activations(x) if int8 else x
                if kernel == "linear":
                    gemm.linear(a, weight(types[0], HIDDEN, HIDDEN))
                elif kernel == "linear_glu":
                    gemm.linear_glu(a, weight(types[0], WIDTH, HIDDEN), weight(types[0], WIDTH, HIDDEN))
                elif kernel == "softmax_matmul":  # one V chunk of 16384 rows (the real chunk), settled rows on
                    logits = torch.zeros(m, 16384)
                    candidates = torch.zeros(m, 256, dtype=torch.int64)  # the fused sampler's K at V = 262144
                    settled = gemm.SettledRows(candidates, torch.zeros(HIDDEN), 2.0 ** -9)
                    gemm.softmax_matmul(logits, logits[:, 0].contiguous(), weight(types[0], 16384, HIDDEN),
                                        operand_dtype=torch.bfloat16, settled=settled)
                else:
                    top_i, top_w = torch.zeros(m, 1, dtype=torch.int64), torch.ones(m, 1)
                    moe.experts(x, weight(types[0], 1, 2 * WIDTH, HIDDEN), weight(types[1], 1, HIDDEN, WIDTH),
                                top_i, top_w, int8_activations=int8)
            gemms = (r for r in launches
                     if not r.kernel.endswith(("_align_kernel", "_quantize_q8_kernel", "_settled_weights_kernel",
                                               "_settled_combine_kernel")))
            for launch, label in zip(gemms, types, strict=False):
                name = {"_gate_up_kernel": "moe gate_up", "_down_kernel": "moe down"}.get(launch.kernel.split(":")[1],
                                                                                           kernel)
                if launch.key() not in seen:  # the two MoE cases launch the same gate_up
                    seen.add(launch.key())
                    cases.append({"case": f"{name} {label} {'int8' if int8 else 'bf16'}", "rows": m,
                                  **asdict(launch)})
    return cases


def sass_k_loop() -> list[dict[str, Any]]:
    """Per `SASS_CASES` variant: the sm_89 K-loop's SASS instruction count and thread
    instructions per weight element (module docstring), from a child Python that compiles for
    real (no TRITON_INTERPRET)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    child = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True,
                           text=True, input=json.dumps(_record_sass_cases()), timeout=1800)
    if child.returncode != 0:
        raise RuntimeError(f"the SASS compile failed ({child.returncode}):\n{child.stderr[-4000:]}")
    return json.loads(child.stdout)


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def k_loop_count(sass: str) -> int:
    """SASS instructions of the K-loop in a `cuobjdump -sass` listing (module docstring)."""
    instructions = [(int(address, 16), opcode, operands)
                    for address, opcode, operands in _INSTRUCTION.findall(sass)]
    loops = []
    for end, (address, opcode, operands) in enumerate(instructions):
        target = re.match(r"\s*(0x[0-9a-f]+)", operands) if opcode == "BRA" else None
        if target and int(target.group(1), 16) < address:
            body = [op for at, op, _ in instructions[:end + 1] if at >= int(target.group(1), 16)]
            if any(op.startswith(("HMMA", "IMMA")) for op in body):
                loops.append(len(body))
    if not loops:
        raise ValueError("no backward branch around a tensor-core instruction")
    return max(loops)


def _sass_child() -> int:
    """Compile the recorded cases (JSON on stdin) for sm_89 and print their K-loop counts."""
    from unittest import mock

    import triton

    from tests.support.cuda_compile import compile_variants

    cuobjdump = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    real_compile, counts = triton.compile, []

    def counting_compile(*args: Any, **kwargs: Any) -> Any:
        compiled = real_compile(*args, **kwargs)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(compiled.asm["cubin"])
            f.flush()
            sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
        counts.append(k_loop_count(sass))
        return compiled

    rows = []
    for case in json.load(sys.stdin):
        counts.clear()
        launch = {k: v for k, v in case.items() if k not in ("case", "rows")}
        with mock.patch.object(triton, "compile", counting_compile):
            (variant,) = compile_variants([launch], {"sm_89": 89})
        if variant.error:
            raise RuntimeError(f"{case['case']}: {variant.error}")
        meta = {k: int(v) for k, v in variant.constexprs.items() if k.startswith(("BLOCK_", "num_"))}
        tiles = 2 if case["case"].startswith(("linear_glu ", "moe gate_up")) else 1  # weight tiles per K-step
        elements = tiles * meta.get("BLOCK_N", meta.get("BLOCK_V", 0)) * meta["BLOCK_K"]
        per_element = counts[0] * 32 * meta["num_warps"] / elements
        row_tiles = -(-case["rows"] // meta["BLOCK_M"])
        rows.append({"case": case["case"], **meta, "registers": variant.registers,
                     "spill_bytes": (variant.stack or 0) + (variant.local or 0), "k_loop_sass": counts[0],
                     "weight_elements_per_iteration": elements,
                     "thread_instructions_per_element": round(per_element, 2), "rows": case["rows"],
                     "row_tiles": row_tiles, "per_element_all_rows": round(per_element * row_tiles, 2)})
    json.dump(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.path[0] = str(ROOT)  # not scripts/benchmarks, whose gguf.py would shadow the gguf package
    sys.exit(_sass_child())
