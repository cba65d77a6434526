"""`scripts/bench.py gpu`: the fast path on a CUDA GPU at the real size, unattended, in < 7.5 min
(gpu-engine.md §7.4), without downloading anything.

Phases, each with its own time budget inside one hard deadline; the results are appended to a JSON
file after every phase (`--out`, default $OUT/bench-gpu.json when $OUT is set, else a temp file),
so a timeout still leaves data, and the whole JSON is printed at the end:

0. `environment`: torch/triton versions, device name, capability, SMs, free memory.
1. `weights`: a GGUF with the published Q4_K_M layout and metadata (692 tensors, 16.8 GB;
   tests/support/published_layout.py) and random valid blocks, drawn on the GPU and streamed to a
   temp dir (`--tmp`) by `scripts/q4_k_m_layout.py write_random_gguf`. Reports bytes and seconds.
2. `triton` / 3. `reference`: `TorchBackend(f, device, kernels)`: load time, prefill of a
   `--prompt`-token prompt, then decode steps (`backend.denoise(canvas, SelfCondition)`; the triton
   path replays its CUDA graph after warm-up and capture) timed with torch.cuda.synchronize around
   `--steps` steps (`--reference-steps` for the slow reference path): ms per step, tok/s for a
   256-token canvas at 14 and 48 steps (256·1000 / (steps · ms)), peak VRAM
   (torch.cuda.max_memory_allocated), and, when fused_sampler.py exposes its per-step function, ms
   per step with the fused sampler (model + sampler + the step's one device->host copy). Random
   weights give broad rows, so self-conditioning is timed dense for (nearly) the whole canvas:
   the worst case of the settled-position shortcut (`gemm.SettledRows`).
   `logits_vs_triton`: the reference path's logits for the triton phase's first canvas (same
   prompt, no self-conditioning) against the triton path's, rms and max relative error.
4. `accuracy`: one layer's MoE per down type (Q4_K gate_up + Q8_0 down: layer 0; + Q5_0: layer 3) and one
   linear (attn_q, Q4_K; also with int8 activations, W4A8) of the file, run by the Triton kernels in
   the backend's compute dtype (bf16 on CUDA) on a canvas of random activations with random top-k
   routing, against an fp32 CPU oracle built from the same blocks (`dg_chat.gguf.dequant.dequantize`
   + fp32 matmul): rms error ‖ours − ref‖/‖ref‖ and max relative error max|ours − ref|/max|ref|.
5. `triton_a16` on CUDA (`triton_int8` on the CPU): phase 2 with the other activations than the
   device's default (phase 2 has `TorchBackend`'s: W4A8 dense GEMMs on CUDA, 16-bit activations on
   the CPU), with whatever time the deadline leaves; `logits_vs_triton` then measures the W4A8
   error against phase 2's logits, or phase 2's against these.

`--smoke` runs the same code on the CPU under TRITON_INTERPRET=1 with a tiny model of the same
layout (same writer, other dimensions), 2 decode steps: the JSON has the same keys (for a test).
Without CUDA and without --smoke it exits non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():  # --smoke: before any kernel module (triton.jit reads it at decoration)
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

DEADLINE_S = 450.0
"""7.5 minutes for everything (gpu-engine.md §7.4)."""
BUDGETS_S = {"environment": 20, "weights": 100, "triton": 180, "reference": 90, "accuracy": 60, "triton_int8": 150,
             "triton_a16": 150}
"""Per-phase time budgets (each also bounded by what is left of the deadline)."""
CANVAS_STEPS = (14, 48)
"""Denoising steps per 256-token canvas for the tok/s figures."""


class PhaseTimeout(Exception):
    pass


class Phases:
    """Runs named phases under their budgets and the global deadline, appending each phase's
    result (or its timeout/error) to the JSON file at once."""

    def __init__(self, out: Path, deadline_s: float, header: dict[str, Any]):
        self.out, self.start, self.deadline_s = out, time.monotonic(), deadline_s
        self.results: dict[str, Any] = {**header, "phases": {}}
        self._write()

    def left_s(self) -> float:
        return self.deadline_s - (time.monotonic() - self.start)

    def run(self, name: str, budget_s: float, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """fn(record) fills `record` as it goes: what it wrote before a timeout or an error stays."""
        allowed = min(budget_s, self.left_s())
        record: dict[str, Any] = {"budget_s": round(allowed, 1)}
        if allowed < 5:
            record["status"] = "skipped: deadline"
        else:
            def expire(*_: object) -> None:
                raise PhaseTimeout(f"over its {allowed:.0f} s budget")

            previous = signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, allowed)
            begin = time.monotonic()
            try:
                fn(record)
                record["status"] = "ok"
            except PhaseTimeout as e:
                record["status"] = f"timeout: {e}"
            except Exception as e:  # noqa: BLE001 - a failed phase is data; the next phase still runs
                record["status"] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            record["seconds"] = round(time.monotonic() - begin, 2)
        self.results["phases"][name] = record
        self._write()
        return record

    def _write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.start, 2)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2, default=str))
        tmp.replace(self.out)


# -- helpers ---------------------------------------------------------------------------------

def _sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant digits (JSON readability without losing small values)."""
    return float(f"{x:.{digits}g}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def _errors(ours: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """rms error ‖ours − ref‖/‖ref‖ and max relative error max|ours − ref|/max|ref| (float64)."""
    ours, ref = ours.detach().double().cpu(), ref.detach().double().cpu()
    diff = ours - ref
    return {"rms_rel": float(diff.norm() / ref.norm()), "max_rel": float(diff.abs().max() / ref.abs().max()),
            "finite": bool(torch.isfinite(ours).all())}


def _dims(smoke: bool):
    """The published dimensions, or the smoke test's tiny ones (same layout and types rules)."""
    from tests.support.published_layout import Dims

    if not smoke:
        return Dims()
    # the interpreter's time goes with the number of programs: few experts, a short canvas
    return Dims(n_layers=2, hidden=256, ff=512, heads=4, experts=4, experts_used=2, expert_ff=64, vocab=512,
                window=32, canvas=8, context=4096, sliding_head_dim=64, sliding_kv_heads=2, full_head_dim=128,
                full_kv_heads=1, full_layers=frozenset({1}))


# -- phases ------------------------------------------------------------------------------------

def environment(info: dict[str, Any], device: torch.device) -> None:
    info |= {"torch": torch.__version__, "python": platform.python_version(),
                            "device": str(device), "cpu_count": os.cpu_count(),
                            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1"}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_free_bytes=free, memory_total_bytes=total, cuda=torch.version.cuda)
    else:
        info.update(name=platform.processor() or "cpu", capability=None, sms=None, memory_free_bytes=None,
                    memory_total_bytes=None, cuda=None)


def write_weights(result: dict[str, Any], dims: Any, tmp: Path, device: torch.device) -> Path:
    """Phase 1: the random-weight GGUF of `dims` (the published layout at full size)."""
    import q4_k_m_layout
    from tests.support.published_layout import model_metadata, q4_k_m_layout as layout_of, tensor_bytes

    layout = layout_of(dims)
    need = sum(tensor_bytes(q, shape) for q, shape in layout.values())
    free = shutil.disk_usage(tmp).free
    if free < need * 1.05:
        raise RuntimeError(f"{tmp} has {free / 1e9:.1f} GB free, the model needs {need / 1e9:.1f} GB (use --tmp)")
    begin = time.perf_counter()
    path = q4_k_m_layout.write_random_gguf(tmp / "random-q4_k_m.gguf", layout, model_metadata(dims), seed=0,
                                           device=device)
    seconds = time.perf_counter() - begin
    size = path.stat().st_size
    result.update(path=str(path), tensors=len(layout), file_bytes=size, write_s=_sig(seconds),
                  write_gb_s=_sig(size / 1e9 / seconds),
                  layers=dims.n_layers, hidden=dims.hidden, vocab=dims.vocab, canvas=dims.canvas)
    return path


class Shared:
    """What the phases hand each other: the prompt, the first canvas and the triton logits."""

    def __init__(self, dims: Any, prompt_tokens: int, device: torch.device):
        generator = torch.Generator().manual_seed(1)
        self.prompt = torch.randint(5, dims.vocab, (prompt_tokens,), generator=generator).tolist()
        self.canvas = torch.randint(0, dims.vocab, (dims.canvas,), generator=generator).to(device)
        self.first_logits: torch.Tensor | None = None
        """The triton path's logits for `canvas` right after the prompt, without SC (on the CPU)."""


def _fused_sampler(vocab: int, canvas_length: int, steps: int, device: torch.device) -> Any:
    """A FusedEntropyBoundSampler for `steps` steps, stepped by hand (`_step`, `_summary`)."""
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler

    generator = torch.Generator(device=device).manual_seed(5)
    sampler = FusedEntropyBoundSampler(SamplerSettings(max_steps=steps), vocab_size=vocab,
                                       canvas_length=canvas_length, generator=generator)
    sampler.stop_rule.reset(torch.zeros(canvas_length, dtype=torch.int64, device=device))
    return sampler


def run_backend(result: dict[str, Any], kernels: str, path: Path, device: torch.device, shared: Shared,
                steps: int, int8_activations: bool = False) -> None:
    """Phases 2, 3 and 5: load, prefill, time `steps` decode steps of one kernel choice."""
    from dg_chat.engine.backends.base import SelfCondition
    from dg_chat.engine.backends.torch_dg.backend import TorchBackend
    from dg_chat.engine.backends.torch_dg.kernels.sampler import largest_candidates
    from dg_chat.gguf.reader import open_gguf

    result["kernels"] = kernels
    result["int8_activations"] = int8_activations
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    begin = time.perf_counter()
    backend = TorchBackend(open_gguf(path), str(device), kernels, int8_activations=int8_activations)
    _sync(device)
    result["load_s"] = _sig(time.perf_counter() - begin)
    result["compute_dtype"] = str(backend.model.dtype).removeprefix("torch.")
    try:
        begin = time.perf_counter()
        backend.prefill(shared.prompt)
        _sync(device)
        result["prefill_tokens"] = len(shared.prompt)
        result["prefill_s"] = _sig(time.perf_counter() - begin)
        result["prefill_tok_s"] = _sig(len(shared.prompt) / (time.perf_counter() - begin))

        # first step (no self-conditioning): eager on CPU, graph capture on CUDA
        begin = time.perf_counter()
        logits = backend.denoise(shared.canvas, None)
        _sync(device)
        result["first_step_s"] = _sig(time.perf_counter() - begin)
        first = logits.float().cpu()
        if kernels == "triton" and shared.first_logits is None:
            shared.first_logits = first
        elif shared.first_logits is not None:
            result["logits_vs_triton"] = _errors(first, shared.first_logits)
        result["logits_finite"] = bool(torch.isfinite(first).all())

        # steady state with self-conditioning: warm-up (and capture), then `steps` timed steps
        self_cond = SelfCondition(logits, lse=logits.float().logsumexp(dim=-1), candidates=largest_candidates(logits))
        begin = time.perf_counter()
        logits = backend.denoise(shared.canvas, self_cond)
        _sync(device)
        result["warmup_sc_step_s"] = _sig(time.perf_counter() - begin)
        self_cond = SelfCondition(logits, lse=self_cond.lse, candidates=self_cond.candidates)  # as the sampler does
        begin = time.perf_counter()
        for _ in range(steps):
            logits = backend.denoise(shared.canvas, self_cond)
        _sync(device)
        ms = (time.perf_counter() - begin) * 1000 / steps
        result.update(decode_steps_timed=steps, decode_ms_per_step=_sig(ms),
                      **{f"tok_s_at_{n}_steps": _sig(shared.canvas.numel() * 1000 / (n * ms))
                         for n in CANVAS_STEPS})
        result["cuda_graphs"] = None if backend._graphs is None else len(backend._graphs._graphs)
        result["peak_vram_bytes"] = _peak_bytes(device)

        sampler = _fused_sampler(backend.vocab_size, backend.canvas_length, steps, device) \
            if kernels == "triton" else None
        result["sampler_included"] = sampler is not None
        result["decode_with_sampler_ms_per_step"] = None
        if sampler is not None:  # from the SC signal above: the graph captured with SC serves every step
            canvas, sc = shared.canvas.clone(), self_cond
            _sync(device)
            begin = time.perf_counter()
            for step in range(1, steps + 1):
                record = sampler._step(backend, canvas, sc, step)
                sampler._summary(record).cpu()  # the step's one device->host copy
                canvas, sc = record.canvas, record.self_cond
            _sync(device)
            result["decode_with_sampler_ms_per_step"] = _sig((time.perf_counter() - begin) * 1000 / steps)
            result["peak_vram_bytes"] = _peak_bytes(device)
    finally:
        backend.close()
        del backend
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def accuracy(result: dict[str, Any], path: Path, device: torch.device, dims: Any) -> None:
    """Phase 4: one layer's MoE and one linear in the compute dtype vs an fp32 CPU oracle."""
    from gguf import GGMLQuantizationType as Q

    from dg_chat.engine.backends.torch_dg.kernels import gemm, moe
    from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import RawWeight
    from dg_chat.gguf.dequant import dequantize, tensor_bytes
    from dg_chat.gguf.reader import open_gguf

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(2)
    tokens, k = dims.canvas, dims.experts_used
    x32 = torch.randn(tokens, dims.hidden, generator=generator)
    x = x32.to(dtype)  # the oracle gets the same rounded inputs
    xr = x.float()
    top_i = torch.rand(tokens, dims.experts, generator=generator).topk(k, dim=-1).indices
    top_w = torch.rand(tokens, k, generator=generator) + 0.1
    top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    result.update(compute_dtype=str(dtype).removeprefix("torch."), tokens=tokens, top_k=k,
                  oracle="fp32 matmuls on the CPU of the exactly dequantised blocks (dequantize, on the device)")
    with open_gguf(path) as f:
        def raw(name: str) -> tuple[torch.Tensor, Q]:
            return tensor_bytes(f, name, None).clone(), Q(f.info(name).type)

        def weight(name: str) -> torch.Tensor:
            data, qtype = raw(name)
            return dequantize(data, qtype, None, torch.float32)

        name = "blk.0.attn_q.weight"
        data, qtype = raw(name)
        w, ref = RawWeight(data.to(device), int(qtype), dims.hidden), xr @ weight(name).T
        result["linear_attn_q"] = {"tensor": name, "type": qtype.name, **_errors(gemm.linear(x.to(device), w), ref)}
        ours = gemm.linear(gemm.quantize_activations(x.to(device)), w)
        result["linear_attn_q_int8"] = {"tensor": name, "type": qtype.name, **_errors(ours, ref)}

        downs = {Q(f.info(f"blk.{i}.ffn_down_exps.weight").type): i for i in reversed(range(dims.n_layers))}
        for layer in sorted(downs.values()):  # the first layer of each down type (Q8_0 and Q5_0)
            p = f"blk.{layer}."
            gu_data, gu_type = raw(p + "ffn_gate_up_exps.weight")
            dn_data, dn_type = raw(p + "ffn_down_exps.weight")
            ours = moe.experts(x.to(device), RawWeight(gu_data.to(device), int(gu_type), dims.hidden),
                               RawWeight(dn_data.to(device), int(dn_type), dims.expert_ff),
                               top_i.to(device), top_w.to(device))
            ref = torch.zeros(tokens, dims.hidden)
            for e in top_i.unique().tolist():  # dequantize is exact: computing it on the device changes nothing
                t, slot = (top_i == e).nonzero(as_tuple=True)
                gu = xr[t] @ dequantize(gu_data[e].to(device), gu_type, None, torch.float32).cpu().T
                gate, up = gu.chunk(2, dim=-1)
                act = torch.nn.functional.gelu(gate, approximate="tanh") * up
                y = act @ dequantize(dn_data[e].to(device), dn_type, None, torch.float32).cpu().T
                ref.index_add_(0, t, y * top_w[t, slot, None])
            result[f"experts_{dn_type.name.lower()}_down"] = {"layer": layer, "gate_up_type": gu_type.name,
                                                              "down_type": dn_type.name, **_errors(ours, ref)}


# -- main --------------------------------------------------------------------------------------

def _default_out() -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "bench-gpu.json"
    return Path(tempfile.mkstemp(prefix="bench-gpu-", suffix=".json")[1])


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU under TRITON_INTERPRET=1")
    parser.add_argument("--out", type=Path, help="JSON written after every phase")
    parser.add_argument("--tmp", type=Path, help="where the random GGUF is written (default: the temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the random GGUF")
    parser.add_argument("--prompt", type=int, help="prompt tokens (default 1024; 16 with --smoke)")
    parser.add_argument("--steps", type=int, help="timed triton decode steps (default 20; 2 with --smoke)")
    parser.add_argument("--reference-steps", type=int, help="timed reference decode steps (default 3; 2 --smoke)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference path")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds for everything")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench.py gpu: no CUDA GPU (torch.cuda.is_available() is False); "
                         "run it on a GPU machine, or use --smoke for the CPU smoke run")
    device = torch.device("cpu" if args.smoke else "cuda")
    if args.smoke:
        torch.set_num_threads(1)
    dims = _dims(args.smoke)
    prompt = args.prompt or (dims.canvas if args.smoke else 1024)
    steps = args.steps or (2 if args.smoke else 20)
    reference_steps = args.reference_steps or (2 if args.smoke else 3)
    out = args.out or _default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    phases = Phases(out, args.deadline, {"benchmark": "gpu", "smoke": args.smoke, "out": str(out)})

    env = phases.run("environment", BUDGETS_S["environment"], lambda record: environment(record, device))
    phases.results["environment"] = {k: v for k, v in env.items() if k not in ("budget_s", "status", "seconds")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-", dir=args.tmp))
    try:
        written: dict[str, Path] = {}

        def weights(record: dict[str, Any]) -> None:
            written["path"] = write_weights(record, dims, tmp, device)

        phases.run("weights", BUDGETS_S["weights"], weights)
        if "path" in written:
            path, shared = written["path"], Shared(dims, prompt, device)
            int8 = device.type == "cuda"  # TorchBackend's default: W4A8 on CUDA
            phases.run("triton", BUDGETS_S["triton"],
                       lambda record: run_backend(record, "triton", path, device, shared, steps, int8))
            if not args.no_reference:
                phases.run("reference", BUDGETS_S["reference"],
                           lambda record: run_backend(record, "reference", path, device, shared, reference_steps))
            phases.run("accuracy", BUDGETS_S["accuracy"], lambda record: accuracy(record, path, device, dims))
            other = "triton_a16" if int8 else "triton_int8"
            phases.run(other, BUDGETS_S[other],
                       lambda record: run_backend(record, "triton", path, device, shared, steps, not int8))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results = phases.results
    results["summary"] = _summary(results)
    phases._write()
    return results


def _summary(results: dict[str, Any]) -> str:
    """One line: ms/step and tok/s of each path, peak VRAM, worst accuracy rms (W4A8 apart)."""
    parts = []
    for name in ("triton", "triton_int8", "triton_a16", "reference"):
        phase = results["phases"].get(name, {})
        if name in ("triton_int8", "triton_a16") and not phase:
            continue  # one of the two runs: the activations the device does not default to
        if "decode_ms_per_step" in phase:
            peak = phase.get("peak_vram_bytes")
            parts.append(f"{name} {phase['decode_ms_per_step']:.1f} ms/step, "
                         f"{phase['tok_s_at_48_steps']:.3g}-{phase['tok_s_at_14_steps']:.3g} tok/s"
                         + (f", peak {peak / 2**30:.1f} GiB" if peak else ""))
        else:
            parts.append(f"{name} {phase.get('status', 'not run')}")
    acc = results["phases"].get("accuracy", {})
    rms = [v["rms_rel"] for k, v in acc.items() if isinstance(v, dict) and "rms_rel" in v and not k.endswith("_int8")]
    parts.append(f"accuracy rms <= {max(rms):.2e}" if rms else f"accuracy {acc.get('status', 'not run')}")
    if "linear_attn_q_int8" in acc:
        parts.append(f"W4A8 linear rms {acc['linear_attn_q_int8']['rms_rel']:.2e}")
    return "; ".join(parts)
