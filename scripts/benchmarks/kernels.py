"""`scripts/bench.py kernels`: what the fast (Triton) path costs per decode step, and how exact its
kernels are, measured on the CPU under Triton's interpreter (TRITON_INTERPRET=1, set here when
no CUDA GPU is present, before any kernel module is imported).

1. **Launches and host syncs per decode step** (`launches`). One decode step of a small random
   model with the published Q4_K_M layout's structure (one sliding and one full-attention layer,
   the same tensors and quant types, tiny sizes) is run with the static KV cache and the
   self-conditioning signal: `TorchBackend.denoise(canvas, SelfCondition(logits, lse, argmax))`, then one
   step of the fused sampler on its logits (`FusedEntropyBoundSampler._step` + `_summary`, with a
   backend stub that hands the measured logits back, so the model is not run twice). Counted:

   - Triton launches (`kernels.runtime.counting`), by kernel;
   - aten ops that launch a kernel on a GPU, by op (a `TorchDispatchMode`; ops made while
     `runtime.in_launch` is True are the interpreter's own copies and are skipped, as are pure
     view/metadata ops and allocations, see NOT_LAUNCHES, and a `to`/`reshape`/`contiguous` that
     returned its input or a view of it);
   - host syncs: `_local_scalar_dense`, `nonzero`, `item`, `equal`, `is_nonzero`, copies to the
     CPU from another device, and calls of `Tensor.tolist` (on CPU tensors a `.cpu()` is no
     sync, so these are the honest CPU proxy).

   Every op is attributed to a section: the prologue (embedding, self-conditioning, positions),
   each layer, the epilogue (final norm) and the LM head. Launch counts do not depend on tensor
   sizes (every kernel's grid is sized from the shapes, not the launch count; the one exception,
   `softmax_matmul`'s partial sum, is present at the real vocabulary and under the interpreter
   alike), so the step of the real 30-layer model is computed from the measured per-kind layer
   counts: prologue + 25 sliding + 5 full + epilogue + LM head + sampler. The JSON says which
   numbers are measured and which computed.

2. **Kernel error per quant type** (`errors`): `gemm.linear` at M = 4, N = 704, K = 2816 (and
   K = 2112 for Q5_0/Q8_0) on random valid blocks, and the grouped MoE `moe.experts` at H = 2816,
   F = 704, E = 128, top-8, T = 2 (Q4_K gate_up with a Q5_0 or Q8_0 down), with float32 and float16
   activations: max|ours − ref| / max|ref| against a float64 reference computed from
   `dg_chat.gguf.dequant.dequantize` (whose float32 values are exact).

`--quick` (for the smoke test, < 60 s on one core) measures the launch counts and a subset of the
errors (every type at K = 2816 with N = 64; the MoE with a Q5_0 down, float32 only, one token
routed to 2 experts). The launches are those of the dense GEMMs' activations a GPU runs by
default: int8 (W4A8, each input quantised by one launch of its own); `--activations 16-bit`
counts those of 16-bit activations.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

if not torch.cuda.is_available():  # before any kernel module is imported: runtime reads it per call,
    os.environ["TRITON_INTERPRET"] = "1"  # but triton.jit decides at decoration time

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

NOT_LAUNCHES = frozenset({
    "view", "_unsafe_view", "expand", "transpose", "t", "slice", "select", "as_strided", "squeeze", "unsqueeze",
    "permute", "alias", "detach", "_reshape_alias", "empty", "empty_like", "empty_strided", "unbind", "split", "chunk",
    "view_as", "expand_as", "split_with_sizes", "lift_fresh",
})
"""aten ops that only make a view or allocate: no kernel launch on a GPU."""
SYNC_OPS = frozenset({"_local_scalar_dense", "nonzero", "item", "equal", "is_nonzero"})
"""aten ops that read a device value back to the host."""

REAL_SLIDING_LAYERS, REAL_FULL_LAYERS = 25, 5
GOAL = {"launches_per_layer_max": 24, "launches_per_step_max": 800, "host_syncs_per_step": 0}


# -- counting ------------------------------------------------------------------------------------

class StepCounter(TorchDispatchMode):
    """Counts, per section, the aten ops that launch a GPU kernel and the host syncs; Triton
    launches are read from `runtime.counting` at each section change."""

    def __init__(self, launches: Any):
        super().__init__()
        from dg_chat.engine.backends.torch_dg.kernels import runtime

        self._runtime, self._launches = runtime, launches
        self.section = "prologue"
        self.aten: dict[str, Counter[str]] = {}
        self.triton: dict[str, Counter[str]] = {}
        self.syncs: dict[str, Counter[str]] = {}
        self._seen: Counter[str] = Counter()

    def enter(self, section: str) -> None:
        """Attribute what follows to `section` (and what came before to the previous one)."""
        now = Counter(self._launches.by_kernel)
        self.triton.setdefault(self.section, Counter()).update(now - self._seen)
        self._seen, self.section = now, section

    def sync(self, what: str) -> None:
        self.syncs.setdefault(self.section, Counter())[what] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self._runtime.in_launch:
            name = func.overloadpacket.__name__
            if name in SYNC_OPS:
                self.sync(name)
            elif name in ("_to_copy", "copy_", "to") and _to_host(func, args, kwargs):
                self.sync(f"{name} to cpu")
            if name not in NOT_LAUNCHES and name not in SYNC_OPS and not _same_storage(name, args, out):
                self.aten.setdefault(self.section, Counter())[name] += 1
        return out


MAYBE_VIEWS = frozenset({"to", "reshape", "contiguous", "flatten", "type_as"})
"""Composite ops that copy (a launch) or return their input or a view of it (none)."""


def _same_storage(name: str, args: tuple, out: Any) -> bool:
    """A MAYBE_VIEWS op that returned its input or a view of it: no launch."""
    if name not in MAYBE_VIEWS or not isinstance(out, torch.Tensor) or not isinstance(args[0], torch.Tensor):
        return False
    return out.untyped_storage().data_ptr() == args[0].untyped_storage().data_ptr()


def _to_host(func, args, kwargs) -> bool:
    """A copy from a non-CPU tensor to the CPU."""
    src = args[1] if func.overloadpacket.__name__ == "copy_" else args[0]
    dst_cpu = (args[0].device.type == "cpu" if func.overloadpacket.__name__ == "copy_"
               else str(kwargs.get("device", src.device)).startswith("cpu"))
    return isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst_cpu


class _CountToList:
    """Counts `Tensor.tolist` calls into a StepCounter while active (tolist on a CPU tensor reads
    memory directly, below the dispatcher)."""

    def __init__(self, counter: StepCounter):
        self.counter, self.original = counter, torch.Tensor.tolist

    def __enter__(self) -> None:
        counter, original = self.counter, self.original

        def tolist(tensor: torch.Tensor):
            counter.sync("tolist")
            return original(tensor)

        torch.Tensor.tolist = tolist  # type: ignore[method-assign]

    def __exit__(self, *exc: object) -> None:
        torch.Tensor.tolist = self.original  # type: ignore[method-assign]


def _wrap(counter: StepCounter, fn: Callable, section: Callable[..., str], after: str) -> Callable:
    def wrapped(*args, **kwargs):
        counter.enter(section(*args))
        try:
            return fn(*args, **kwargs)
        finally:
            counter.enter(after)
    return wrapped


def count_model_step(backend: Any, canvas: torch.Tensor, self_cond: Any) -> StepCounter:
    """One `backend.denoise` with the sections prologue / layer i / epilogue / lm_head."""
    from dg_chat.engine.backends.torch_dg.kernels import runtime

    model = backend.model
    kinds = ["sliding" if layer.sliding else "full" for layer in backend.hp.layers]
    with runtime.counting() as launches:
        counter = StepCounter(launches)
        model._layer = _wrap(counter, model._layer, lambda i, *_: f"layer {i} {kinds[i]}", "epilogue")
        model.ops.lm_head = _wrap(counter, model.ops.lm_head, lambda *_: "lm_head", "after")
        try:
            with counter, _CountToList(counter):
                backend.denoise(canvas, self_cond)
                counter.enter("after")
        finally:
            del model._layer, model.ops.lm_head
    return counter


class _LogitsBackend:
    """A backend whose denoise returns given logits: the sampler's own work, without the model."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def denoise(self, canvas: torch.Tensor, self_cond: Any) -> torch.Tensor:
        return self.logits


def count_sampler_step(logits: torch.Tensor, canvas_length: int, vocab: int) -> StepCounter:
    """One fused-sampler step (`_step` + `_summary`) on `logits`."""
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler
    from dg_chat.engine.backends.torch_dg.kernels import runtime

    generator = torch.Generator(device=logits.device).manual_seed(3)
    sampler = FusedEntropyBoundSampler(SamplerSettings(), vocab_size=vocab, canvas_length=canvas_length,
                                       generator=generator)
    canvas = torch.randint(0, vocab, (canvas_length,), device=logits.device)
    sampler.stop_rule.reset(canvas)
    stub = _LogitsBackend(logits.clone())
    with runtime.counting() as launches:
        counter = StepCounter(launches)
        counter.section = "sampler"
        with counter, _CountToList(counter):
            sampler._summary(sampler._step(stub, canvas, None, 1))
            counter.enter("after")
    return counter


def _section_totals(counter: StepCounter, section: str) -> dict[str, Any]:
    triton, aten, syncs = (getattr(counter, k).get(section, Counter()) for k in ("triton", "aten", "syncs"))
    return {"launches": sum(triton.values()) + sum(aten.values()), "triton_launches": sum(triton.values()),
            "aten_launches": sum(aten.values()), "host_syncs": sum(syncs.values()),
            "triton_by_kernel": dict(sorted(triton.items())), "aten_by_op": dict(sorted(aten.items())),
            "host_syncs_by_op": dict(sorted(syncs.items()))}


def tiny_dims():
    """The counting model: the published layout's structure (one sliding, one full layer) at
    tiny sizes; the Triton kernels' launch counts do not depend on the sizes."""
    from tests.support.published_layout import Dims

    return Dims(n_layers=2, hidden=256, ff=512, heads=4, experts=8, experts_used=2, expert_ff=64, vocab=512,
                window=32, canvas=16, context=4096, sliding_head_dim=64, sliding_kv_heads=2, full_head_dim=128,
                full_kv_heads=1, full_layers=frozenset({1}))


def _compute_in_bf16(backend: Any, int8_activations: bool) -> None:
    """Give a CPU TorchBackend the CUDA path's compute dtype (bf16), so that the dtype casts of a
    step (which are no-ops in float32) are counted as on a GPU: the same model, ops and cache
    classes, rebuilt with bf16 vectors and a bf16 static cache."""
    from dg_chat.engine.backends.torch_dg.cache import StaticKVCache
    from dg_chat.engine.backends.torch_dg.kernels.triton_ops import TritonOps
    from dg_chat.engine.backends.torch_dg.model import DiffusionGemma
    from dg_chat.engine.backends.torch_dg.weights import Weights

    weights = Weights(backend.file, torch.device("cpu"), torch.bfloat16, raw_matrices=True)
    ops = TritonOps(backend.hp, weights, int8_activations=int8_activations)
    backend.model = DiffusionGemma(backend.hp, weights, ops)
    backend.cache = StaticKVCache(backend.hp, torch.device("cpu"), torch.bfloat16)


def measure_launches(device: torch.device, int8_activations: bool = False) -> dict[str, Any]:
    """Launches and host syncs per decode step: measured per section on the tiny model, then the
    real 30-layer step computed from them."""
    import q4_k_m_layout
    from dg_chat.engine.backends.base import SelfCondition
    from dg_chat.engine.backends.torch_dg.backend import TorchBackend
    from dg_chat.engine.backends.torch_dg.kernels.sampler import largest_candidates
    from dg_chat.gguf.reader import open_gguf
    from tests.support.published_layout import model_metadata, q4_k_m_layout as layout_of

    dims = tiny_dims()
    with tempfile.TemporaryDirectory() as tmp:
        path = q4_k_m_layout.write_random_gguf(Path(tmp) / "tiny-q4_k_m.gguf", layout_of(dims), model_metadata(dims))
        backend = TorchBackend(open_gguf(path), str(device), "triton", int8_activations=int8_activations)
        try:
            if device.type == "cpu":
                _compute_in_bf16(backend, int8_activations)
            generator = torch.Generator().manual_seed(0)
            backend.prefill(torch.randint(5, dims.vocab, (dims.canvas,), generator=generator).tolist())
            canvas = torch.randint(0, dims.vocab, (dims.canvas,), generator=generator).to(device)
            logits = 4 * torch.randn(dims.canvas, dims.vocab, generator=generator).to(device)  # an SC signal
            # as the fused sampler hands it over
            self_cond = SelfCondition(logits, lse=logits.logsumexp(dim=-1), candidates=largest_candidates(logits))
            model = count_model_step(backend, canvas, self_cond)
            sampler = count_sampler_step(logits, dims.canvas, dims.vocab)
        finally:
            backend.close()

    sections = {name: _section_totals(model, name) for name in ("prologue", "epilogue", "lm_head")}
    layers = {kind: _section_totals(model, f"layer {i} {kind}")
              for i, kind in enumerate("full" if i in dims.full_layers else "sliding" for i in range(dims.n_layers))}
    sampler_totals = _section_totals(sampler, "sampler")
    leftover = {k: v for k, v in model.aten.items() if k not in {"prologue", "epilogue", "lm_head", "after"}
                and not k.startswith("layer")}

    def step_total(key: str) -> int:
        total = sum(sections[s][key] for s in sections)
        total += REAL_SLIDING_LAYERS * layers["sliding"][key] + REAL_FULL_LAYERS * layers["full"][key]
        return total + sampler_totals[key]

    per_layer_max = max(layers["sliding"]["launches"], layers["full"]["launches"])
    step = {"launches": step_total("launches"), "triton_launches": step_total("triton_launches"),
            "aten_launches": step_total("aten_launches"), "host_syncs": step_total("host_syncs")}
    return {
        "measured": ("prologue, one sliding layer, one full layer, epilogue, lm_head and the sampler step, on a "
                     f"{dims.n_layers}-layer model with the published layout's tensors and types at tiny sizes "
                     f"(hidden {dims.hidden}, vocab {dims.vocab}, canvas {dims.canvas}), triton kernels on "
                     f"{device}{' under TRITON_INTERPRET=1, in bf16 as on a GPU' if device.type == 'cpu' else ''}"
                     f"{', int8 activations (W4A8 dense GEMMs)' if int8_activations else ''}; "
                     f"prompt of {dims.canvas} tokens (the counts do not depend on the cache length)"),
        "computed": (f"real_step = prologue + {REAL_SLIDING_LAYERS} x sliding + {REAL_FULL_LAYERS} x full + epilogue "
                     "+ lm_head + sampler (launch counts do not depend on tensor sizes)"),
        "sampler_note": ("FusedEntropyBoundSampler._step + _summary (row statistics, acceptance, renoise, stop rule, "
                         "packing); its one designed device->host copy of the packed step (HostStep) comes after "
                         "and is not counted"),
        "attention_note": ("scaled_dot_product_attention counts as 1 launch (one fused kernel); on a GPU a "
                           "backend without bool-mask + GQA support falls back to the math path (several kernels)"),
        "per_layer": layers,
        "prologue": sections["prologue"],
        "epilogue": sections["epilogue"],
        "lm_head": sections["lm_head"],
        "sampler": sampler_totals,
        "unattributed_aten_ops": {k: dict(v) for k, v in leftover.items()},
        "real_model": {"sliding_layers": REAL_SLIDING_LAYERS, "full_layers": REAL_FULL_LAYERS,
                       "layers_launches": REAL_SLIDING_LAYERS * layers["sliding"]["launches"]
                       + REAL_FULL_LAYERS * layers["full"]["launches"],
                       "step": step},
        "goal": GOAL,
        "goal_met": {"launches_per_layer": per_layer_max <= GOAL["launches_per_layer_max"],
                     "launches_per_step": step["launches"] <= GOAL["launches_per_step_max"],
                     "host_syncs": step["host_syncs"] == GOAL["host_syncs_per_step"]},
    }


# -- errors ------------------------------------------------------------------------------------

def _raw_weight(qtype, n: int, k: int, generator: torch.Generator, experts: int | None = None):
    """Random valid raw blocks [(experts,) n, row_bytes] of `qtype` (values of std 0.02)."""
    from gguf import GGMLQuantizationType as Q

    import q4_k_m_layout

    shape = (n, k) if experts is None else (experts, n, k)
    if qtype in q4_k_m_layout.UNIT_STD:
        return q4_k_m_layout.random_blocks_torch(qtype, shape, 0.02, generator)
    dtype = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}[qtype]
    values = (torch.randn(shape, generator=generator, device=generator.device) * 0.02).to(dtype)
    return values.view(torch.uint8).reshape(*shape[:-1], -1)


def _dequant64(raw: torch.Tensor, qtype) -> torch.Tensor:
    from dg_chat.gguf.dequant import dequantize

    return dequantize(raw.cpu(), qtype, None, torch.float32).double()


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double().cpu() - ref).abs().max() / ref.abs().max())


def linear_error(qtype, k: int, n: int, m: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> float:
    """Relative error of `gemm.linear` on random blocks of `qtype` against float64."""
    from dg_chat.engine.backends.torch_dg.kernels import gemm
    from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import RawWeight

    generator = torch.Generator(device=device).manual_seed(seed)
    raw = _raw_weight(qtype, n, k, generator)
    x = torch.randn(m, k, generator=generator, device=device).to(dtype)
    ours = gemm.linear(x, RawWeight(raw, int(qtype), k))
    return _rel(ours, x.double().cpu() @ _dequant64(raw, qtype).T)


def experts_error(down_type, dtype: torch.dtype, device: torch.device, hidden: int = 2816, ff: int = 704,
                  n_experts: int = 128, top_k: int = 8, tokens: int = 2, seed: int = 0) -> float:
    """Relative error of the grouped MoE (`moe.experts`, Q4_K gate_up) against float64."""
    from gguf import GGMLQuantizationType as Q

    from dg_chat.engine.backends.torch_dg.kernels import moe
    from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import RawWeight

    generator = torch.Generator(device=device).manual_seed(seed)
    gate_up = _raw_weight(Q.Q4_K, 2 * ff, hidden, generator, n_experts)
    down = _raw_weight(down_type, hidden, ff, generator, n_experts)
    x = torch.randn(tokens, hidden, generator=generator, device=device).to(dtype)
    top_i = torch.stack([torch.randperm(n_experts, generator=generator, device=device)[:top_k]
                         for _ in range(tokens)])
    top_w = torch.rand(tokens, top_k, generator=generator, device=device) + 0.1
    top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    ours = moe.experts(x, RawWeight(gate_up, int(Q.Q4_K), hidden), RawWeight(down, int(down_type), ff), top_i, top_w)

    xs, ids, ws = x.double().cpu(), top_i.cpu(), top_w.double().cpu()
    ref = torch.zeros(tokens, hidden, dtype=torch.float64)
    for t in range(tokens):
        for slot in range(top_k):
            e = int(ids[t, slot])
            gu = xs[t] @ _dequant64(gate_up[e], Q.Q4_K).T
            g, u = gu[:ff], gu[ff:]
            act = torch.nn.functional.gelu(g, approximate="tanh") * u
            ref[t] += ws[t, slot] * (act @ _dequant64(down[e], down_type).T)
    return _rel(ours, ref)


def measure_errors(device: torch.device, quick: bool) -> dict[str, Any]:
    from gguf import GGMLQuantizationType as Q

    dtypes = {"fp32": torch.float32, "fp16": torch.float16}
    n, m = (64, 4) if quick else (704, 4)
    linear: dict[str, dict[str, float]] = {}
    for qtype in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q5_0, Q.Q4_K, Q.Q6_K):
        ks = [2816] + ([2112] if qtype in (Q.Q5_0, Q.Q8_0) and not quick else [])
        for k in ks:
            linear[f"{qtype.name} K={k}"] = {name: linear_error(qtype, k, n, m, dtype, device)
                                               for name, dtype in dtypes.items()}
    # quick: one token routed to 2 experts (the interpreter's time grows with the live row-blocks)
    moe_shape = dict(hidden=2816, ff=704, n_experts=128, top_k=2 if quick else 8, tokens=1 if quick else 2)
    moe_cases = {Q.Q5_0: ["fp32"]} if quick else {Q.Q5_0: ["fp32", "fp16"], Q.Q8_0: ["fp32", "fp16"]}
    experts: dict[str, dict[str, float]] = {}
    for down, names in moe_cases.items():
        experts[f"Q4_K gate_up, {down.name} down"] = {
            name: experts_error(down, dtypes[name], device, **moe_shape) for name in names}
    return {
        "metric": "max|ours - ref| / max|ref|, ref in float64 from dg_chat.gguf.dequant.dequantize",
        "linear_shape": {"M": m, "N": n, "K": "2816 (and 2112 for Q5_0/Q8_0)" if not quick else 2816},
        "experts_shape": {"H": moe_shape["hidden"], "F": moe_shape["ff"], "E": moe_shape["n_experts"],
                          "top_k": moe_shape["top_k"], "T": moe_shape["tokens"]},
        "linear": linear,
        "experts": experts,
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="bench.py kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="launch counts and a subset of the errors (< 60 s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--activations", choices=("int8", "16-bit"), default="int8",
                        help="the dense GEMMs' activations whose launches are counted (default: int8, as CUDA runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    int8_activations = args.activations == "int8"
    launches = measure_launches(device, int8_activations)
    launches_s = time.perf_counter() - start
    errors = measure_errors(device, args.quick)
    return {
        "device": str(device),
        "interpreter": os.environ.get("TRITON_INTERPRET") == "1",
        "quick": args.quick,
        "int8_activations": int8_activations,
        "torch": torch.__version__,
        "launches": launches,
        "errors": errors,
        "seconds": {"launches": round(launches_s, 1), "errors": round(time.perf_counter() - start - launches_s, 1)},
    }
