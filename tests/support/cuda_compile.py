"""Compile the fast path's Triton kernels for real CUDA targets, offline (no GPU needed).

The kernel tests run under Triton's CPU interpreter, which accepts what a real compile rejects
(non-constexpr globals read in a kernel, libdevice calls, dtype mismatches) and which is launched
with the interpreter's own tile sizes. This module closes that gap in two halves:

1. `record_gpu_launches` (in the test process, under TRITON_INTERPRET=1): every
   `runtime.launch` is recorded while the host code chooses its launch configuration as it does
   on a GPU. Three kernel modules branch on `interpreting()`, and it is patched to False as each
   sees it (`check_config_branches` fails if another module or another spelling appears):
   `gemm.interpreting` (the `_*_config` block sizes and `UPCAST`), and `runtime.interpreting`
   as `moe` (`tile_sizes`, `UPCAST`) and `sampler` (`_layout`) see it; `fused_ops`
   launches the same configuration everywhere. The kernels themselves are not run (their outputs
   stay uninitialised), unless `execute=True`: then each recorded launch also runs under the
   interpreter (GPU tiles only mean more programs, minutes for a model step), with the numerics
   switches that exist only for the interpreter put back to its values (`INTERPRETER_ONLY`).

2. `compile_variants` (in a child process without TRITON_INTERPRET, where `@triton.jit` makes real
   `JITFunction`s): each recorded launch is bound exactly as `JITFunction.run` binds it on a GPU
   (`create_function_from_signature` with the CUDA backend's `specialize_impl`: tensor dtypes and
   16-byte alignment, ints as i32/i64, ints equal to 1 and None as constexprs, floats as fp32),
   deduplicated, and compiled with `triton.compile` for each target down to a cubin; ptxas'
   register, spill (stack/local) and shared-memory use are read back with `cuobjdump`.

`scripts/bench.py compile` prints the variants of the published widths' step as JSON.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[2]
TARGETS: dict[str, int] = {"sm_89": 89, "sm_90": 90}
"""CUDA targets compiled for: RTX 4090 (Ada) and H100/H200 (Hopper), by compute capability."""

INTERPRETER_ONLY = {"UPCAST": True}
"""Constexprs that only switch the interpreter's numerics (`UPCAST`: its bf16 `tl.dot` is broken),
with the value a recorded launch is executed with under the interpreter (the recorded, compiled
value is the GPU's)."""

KERNEL_MODULES = ("gemm", "moe", "fused_ops", "sampler", "gguf_tiles")
KERNEL_PACKAGE = "dg_chat.engine.backends.torch_dg.kernels"
# The kernel modules (and what imports them) are imported where used: they need triton, whose
# absence `cuda_backend_unavailable` reports, and the environment a caller sets up first.

# -- 1. recording (interpreter side) -----------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """One launch as JSON-able data: the kernel as "module:name", its positional arguments and
    keyword meta (constexprs and launch options), each encoded by `encode`."""

    kernel: str
    args: tuple[Any, ...]
    meta: tuple[tuple[str, Any], ...]
    params: tuple[str, ...] = ()
    """The kernel's parameter names when it was launched (the tree may change before the compile)."""
    phases: tuple[str, ...] = ()
    """What the model was doing (prefill, decode...) when it made this launch, for the report."""

    def key(self) -> str:
        """Identity for deduplication before the compile (shape ints included: the binder
        deduplicates further on what Triton really specialises)."""
        return json.dumps([self.kernel, self.args, self.meta])


def unique_launches(launches: list[Launch]) -> list[Launch]:
    """Distinct launches in first-launch order, each with the phases of all its copies."""
    unique: dict[str, Launch] = {}
    for launch in launches:
        first = unique.setdefault(launch.key(), launch)
        if first is not launch:
            phases = first.phases + tuple(p for p in launch.phases if p not in first.phases)
            unique[launch.key()] = replace(first, phases=phases)
    return list(unique.values())


def encode(value: Any) -> Any:
    """A kernel argument as JSON: what Triton's specialisation reads from it, nothing more.

    Tensors keep their dtype and whether their address is 16-byte aligned (the CPU allocator
    aligns like the CUDA one; views keep their offset); `tl.dtype`s and `tl.constexpr`s their value.
    """
    from dg_chat.engine.backends.torch_dg.kernels.runtime import tl

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "aligned": value.data_ptr() % 16 == 0}
    if isinstance(value, tl.constexpr):
        return encode(value.value)
    if isinstance(value, tl.dtype):
        return {"tl_dtype": value.name}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise TypeError(f"cannot record a kernel argument of type {type(value).__name__}: {value!r}")


class _GpuConfigRuntime(ModuleType):
    """`runtime` as `moe` and `sampler` see it while recording: `interpreting()` is False (so
    they choose GPU tiles); everything else is the real module, looked up at each use."""

    def __init__(self, real: ModuleType):
        super().__init__(real.__name__)
        self._real = real

    def interpreting(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _kernel_module(name: str) -> ModuleType:
    return importlib.import_module(f"{KERNEL_PACKAGE}.{name}")


def check_config_branches() -> None:
    """Fail if a kernel module branches on `interpreting()` somewhere `record_gpu_launches` does
    not patch: its launches would silently be recorded with the interpreter's choices."""
    patched = {"gemm": "interpreting()", "moe": "runtime.interpreting()", "sampler": "runtime.interpreting()"}
    for name in KERNEL_MODULES + ("triton_ops",):
        source = inspect.getsource(_kernel_module(name))
        calls = set(re.findall(r"[\w.]*interpreting\(\)", source))
        expected = {patched[name]} if name in patched else set()
        if calls != expected:
            raise AssertionError(f"kernels/{name}.py calls {sorted(calls)} but record_gpu_launches patches "
                                 f"{sorted(expected)}: teach it the module's GPU launch configuration")


class _Recording(list):
    """The recorded launches; assign `.phase` to label the launches that follow."""

    phase: str = ""


@contextmanager
def record_gpu_launches(*, execute: bool = False) -> Iterator[_Recording]:
    """Record every Triton launch made inside the block, with the launch configuration a GPU
    would get (module docstring); with `execute` each launch also runs under the interpreter.
    Without it the block must not depend on what the kernels compute (a step with no host sync).

    Yields the list the launches are appended to; set its `phase` attribute to label the
    launches that follow (`Launch.phases`).
    """
    from dg_chat.engine.backends.torch_dg.kernels import runtime

    if not runtime.interpreting():
        raise RuntimeError("recording drives the kernels' host code on CPU tensors: it needs TRITON_INTERPRET=1")
    check_config_branches()
    gemm, moe, sampler = (_kernel_module(name) for name in ("gemm", "moe", "sampler"))
    launches = _Recording()
    real_launch = runtime.launch

    def recording_launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
        launches.append(Launch(f"{kernel.fn.__module__}:{kernel.fn.__name__}", tuple(encode(a) for a in args),
                               tuple((k, encode(v)) for k, v in meta.items()), tuple(kernel.arg_names),
                               (launches.phase,)))
        if execute:
            real_launch(kernel, grid, *args, **{k: INTERPRETER_ONLY.get(k, v) for k, v in meta.items()})

    gpu_runtime = _GpuConfigRuntime(runtime)
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(runtime, "launch", recording_launch))
        stack.enter_context(mock.patch.object(gemm, "launch", recording_launch))
        stack.enter_context(mock.patch.object(gemm, "interpreting", lambda: False))
        stack.enter_context(mock.patch.object(moe, "runtime", gpu_runtime))
        stack.enter_context(mock.patch.object(sampler, "runtime", gpu_runtime))
        yield launches


PREFILLS = (300, 20, 5)
"""Prompt tokens each prefill of `record_step` adds: with a 256-token canvas (the encoder's chunk)
chunks of 256, 44, 20 and 5 rows, i.e. every BLOCK_M (64, 32, 16) and both M % 16 cases."""


class PublishedWidths:
    """The published 26B-A4B's dimensions (hidden 2816, head dims 256/512, 128 experts, top-8,
    vocabulary 262,144, canvas 256) in two layers (one sliding, one full), computing in bf16 as
    on CUDA, with uninitialised weights: what `record_gpu_launches` needs, which never runs a
    kernel, so the ~1.5 GB of raw blocks are allocated but never touched. It quacks like the
    `TorchBackend` that `record_step` and the fused sampler drive. `int8_activations`: the
    W4A8 dense GEMMs (`TritonOps(int8_activations=True)`)."""

    def __init__(self, int8_activations: bool = False) -> None:
        from dg_chat.engine.backends.torch_dg.cache import StaticKVCache
        from dg_chat.engine.backends.torch_dg.hparams import HParams
        from dg_chat.engine.backends.torch_dg.kernels.triton_ops import TritonOps
        from dg_chat.engine.backends.torch_dg.model import DiffusionGemma
        from dg_chat.engine.backends.torch_dg.weights import Weights
        from tests.support.published_layout import Dims, LayoutIndex, model_metadata, q4_k_m_layout

        dims = Dims(n_layers=2, full_layers=frozenset({1}))
        index = LayoutIndex(q4_k_m_layout(dims), model_metadata(dims))
        self.hp = HParams.from_gguf(index)
        weights = object.__new__(Weights)  # the loader reads data; these weights have none
        weights.file, weights.device, weights.dtype = index, torch.device("cpu"), torch.bfloat16
        weights._raw = {name: torch.empty(info.byte_shape, dtype=torch.uint8)
                        for name, info in index.tensors.items() if len(info.shape) > 1}
        weights._resident = {name: torch.ones(info.shape, dtype=torch.bfloat16)
                             for name, info in index.tensors.items() if len(info.shape) == 1}
        self.model = DiffusionGemma(self.hp, weights, TritonOps(self.hp, weights, int8_activations=int8_activations))
        self.cache = StaticKVCache(self.hp, self.model.device, self.model.dtype)
        self.canvas_length, self.vocab_size = self.hp.canvas_length, self.hp.vocab_size
        self.tokens = 0

    def prefill(self, token_ids: list[int]) -> None:
        self.model.encode(torch.tensor(token_ids[self.tokens:]), self.cache)
        self.tokens = len(token_ids)

    def denoise(self, canvas: Any, self_cond: Any) -> Any:
        return self.model.decode(canvas, self.cache, self_cond)


def triton_backend(path: Path, dtype: torch.dtype) -> Any:
    """The Triton `TorchBackend` of the GGUF at `path` on the CPU, computing in `dtype`: float32
    as the CPU loads it, or bf16 as CUDA does (the same `Weights` and model in another dtype)."""
    from dg_chat.engine.backends.torch_dg.backend import TorchBackend
    from dg_chat.engine.backends.torch_dg.model import DiffusionGemma
    from dg_chat.engine.backends.torch_dg.weights import Weights
    from dg_chat.gguf.reader import open_gguf

    backend = TorchBackend(open_gguf(path), "cpu", "triton")
    if dtype != backend.model.dtype:
        weights = Weights(backend.file, torch.device("cpu"), dtype, raw_matrices=True)
        backend.model = DiffusionGemma(backend.hp, weights, backend._ops(weights))
        backend.cache = backend._new_cache()
    return backend


def record_step(backend: Any, model: str) -> list[Launch]:
    """The launches of prefills of `PREFILLS` tokens, of a block's first canvas and of two
    fused-sampler denoising steps (without, then with self-conditioning) of `backend` (a
    `TorchBackend` or `PublishedWidths`), each labelled with `model` and its phase."""
    from dg_chat.config import SamplerSettings
    from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler
    from dg_chat.engine.backends.torch_dg.kernels.sampler import uniform_canvas

    generator = torch.Generator().manual_seed(1)
    sampler = FusedEntropyBoundSampler(SamplerSettings(), vocab_size=backend.vocab_size,
                                       canvas_length=backend.canvas_length, generator=generator)
    with torch.no_grad(), record_gpu_launches() as launches:
        prompt: list[int] = []
        for n in PREFILLS:
            launches.phase = f"{model} prefill {n}"
            prompt += range(5, 5 + n)
            backend.prefill(prompt)
        launches.phase = f"{model} canvas"
        canvas = uniform_canvas(backend.canvas_length, backend.vocab_size, sampler.seed, sampler.counter)
        launches.phase = f"{model} step"
        record = sampler._step(backend, canvas, None, 1)
        launches.phase = f"{model} step+SC"
        sampler._step(backend, record.canvas, record.self_cond, 2)
    return list(launches)


# -- 2. compiling (child process, no interpreter) -----------------------------------------------------


@dataclass
class Variant:
    """One distinct compile of one kernel for one target, and what ptxas made of it."""

    kernel: str
    target: str
    signature: dict[str, str]
    """Parameter -> Triton type ("*bf16", "i32", "constexpr"...)."""
    constexprs: dict[str, str]
    """Constexpr parameters and options (num_warps, num_stages) -> value, as text."""
    divisible_by_16: list[str]
    """Parameters Triton specialised as 16-byte aligned / multiples of 16."""
    phases: list[str] = field(default_factory=list)
    error: str | None = None
    registers: int | None = None
    stack: int | None = None
    """Bytes of stack per thread: register spills (with `local`)."""
    local: int | None = None
    shared: int | None = None
    """Bytes of shared memory (static, from ptxas, and Triton's dynamic allocation)."""
    compile_s: float = 0.0

    def describe(self) -> str:
        """kernel[constexprs](tensor dtypes) on target: a name for messages and reports."""
        tensors = ",".join(f"{k}:{v[1:]}" for k, v in self.signature.items() if v.startswith("*"))
        consts = " ".join(f"{k}={v}" for k, v in self.constexprs.items())
        ints = [k for k in self.divisible_by_16 if not self.signature[k].startswith("*")]
        multiples = f" %16:{','.join(ints)}" if ints else ""
        return f"{self.target} {self.kernel.split(':')[1]}[{consts}{multiples}]({tensors})"


def _stand_in(value: Any) -> Any:
    """A Python value that Triton's binder specialises as the recorded argument was."""
    import triton.language as tl

    if isinstance(value, dict) and "tensor" in value:
        base = torch.empty(64, dtype=getattr(torch, value["tensor"]))
        return base if value["aligned"] else base[1:]  # 1 element past a 64-byte boundary
    if isinstance(value, dict) and "tl_dtype" in value:
        return getattr(tl, value["tl_dtype"]) if hasattr(tl, value["tl_dtype"]) else tl.dtype(value["tl_dtype"])
    return value


def _resource_usage(cubin: bytes, cuobjdump: str) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of the cubin's one kernel (cuobjdump --dump-resource-usage)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    return {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def compile_variants(launches: list[dict[str, Any]], targets: dict[str, int] = TARGETS) -> list[Variant]:
    """Bind and compile every launch (as `Launch` dicts) for every target: the distinct
    variants, in first-launch order, each with its error (None: compiled) and resource use.
    Must run where TRITON_INTERPRET is off (see `run_compile`)."""
    import time

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compile_variants needs real JITFunctions: run it without TRITON_INTERPRET=1")
    cuobjdump = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    variants: dict[tuple[str, str], Variant] = {}
    for target_name, capability in targets.items():
        target = GPUTarget("cuda", capability, 32)
        backend = make_backend(target)
        binders: dict[str, Any] = {}
        for launch in launches:
            module, name = launch["kernel"].split(":")
            kernel = getattr(importlib.import_module(module), name)
            if not isinstance(kernel, JITFunction):
                raise RuntimeError(f"{launch['kernel']} is a {type(kernel).__name__}, not a JITFunction")
            names = [p.name for p in kernel.params]
            if names != list(launch["params"]):
                raise RuntimeError(f"{launch['kernel']} changed between the recording and the compile: parameters "
                                   f"{list(launch['params'])} then {names} (was its module edited meanwhile?)")
            if launch["kernel"] not in binders:
                binders[launch["kernel"]] = create_function_from_signature(kernel.signature, kernel.params, backend)
            # what JITFunction.run adds before binding, then its binder and _pack_args
            kwargs = {k: _stand_in(v) for k, v in launch["meta"]}
            kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
            kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
            kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
            bound, specialization, options = binders[launch["kernel"]](*map(_stand_in, launch["args"]), **kwargs)
            options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
            shown = {names[path[0]]: str(value) for path, value in constexprs.items()}
            shown.update(num_warps=str(options.num_warps), num_stages=str(options.num_stages))
            key = (target_name, json.dumps([launch["kernel"], signature, shown, sorted(map(str, attrs.items()))]))
            if key in variants:
                variants[key].phases += [p for p in launch["phases"] if p not in variants[key].phases]
                continue
            variant = variants[key] = Variant(
                kernel=launch["kernel"], target=target_name, signature=signature,
                constexprs={k: v for k, v in shown.items() if signature.get(k) == "constexpr" or k.startswith("num_")},
                divisible_by_16=[names[path[0]] for path, attr in attrs.items() if attr],
                phases=list(launch["phases"]))
            start = time.perf_counter()
            try:
                compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                          options=options.__dict__)
            except Exception as error:  # noqa: BLE001 - every failure is reported, by variant
                variant.error = f"{type(error).__name__}: {error}".strip()
                continue
            finally:
                variant.compile_s = round(time.perf_counter() - start, 2)
            usage = _resource_usage(compiled.asm["cubin"], cuobjdump)
            variant.registers, variant.stack, variant.local = usage.get("reg"), usage.get("stack"), usage.get("local")
            variant.shared = max(usage.get("shared", 0), compiled.metadata.shared)
    return list(variants.values())


def run_compile(launches: list[Launch], targets: dict[str, int] = TARGETS, timeout: float = 900) -> list[Variant]:
    """`compile_variants` in a child Python without TRITON_INTERPRET (deduplicated launches and
    the targets in, variants out, as JSON through stdin/stdout)."""
    request = {"targets": targets, "launches": [asdict(launch) for launch in unique_launches(launches)]}
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "tests.support.cuda_compile"], cwd=ROOT, env=env,
                            input=json.dumps(request), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"the compile process failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return [Variant(**v) for v in json.loads(result.stdout)]


def cuda_backend_unavailable() -> str | None:
    """Why CUDA kernels cannot be compiled offline here (None: they can)."""
    try:
        import triton
        from triton.backends import backends
    except ImportError as error:
        return f"triton is not installed ({error})"
    if "nvidia" not in backends:
        return "this triton build has no NVIDIA backend"
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    missing = [tool for tool in ("ptxas", "cuobjdump") if not (tools / tool).exists()]
    return f"triton's NVIDIA backend lacks {', '.join(missing)} in {tools}" if missing else None


def report(variants: list[Variant]) -> str:
    """One line per variant: target, kernel, constexprs, tensor dtypes, registers, spills, shared;
    then per target the number of variants, failures and spilling variants."""
    lines = []
    for v in variants:
        if v.error:
            cause = [line for line in v.error.splitlines() if line.strip()][-1]  # the compiler's message
            lines.append(f"FAILED {v.describe()}: {cause}")
        else:
            lines.append(f"{v.describe()}  regs={v.registers} stack={v.stack} local={v.local} "
                         f"shared={v.shared} ({v.compile_s:.1f}s; {', '.join(v.phases)})")
    for target in sorted({v.target for v in variants}):
        mine = [v for v in variants if v.target == target]
        spilling = [v for v in mine if not v.error and (v.stack or 0) + (v.local or 0) > 0]
        lines.append(f"{target}: {len(mine)} variants, {sum(bool(v.error) for v in mine)} failed, "
                     f"{len(spilling)} with register spills:")
        lines += [f"  {v.describe()}: regs={v.registers} stack={v.stack} local={v.local}" for v in spilling]
    return "\n".join(lines)


def main() -> int:
    """Child process: {"targets": ..., "launches": [...]} as JSON on stdin, variants as JSON on stdout."""
    request = json.load(sys.stdin)
    variants = compile_variants(request["launches"], request["targets"])
    json.dump([asdict(v) for v in variants], sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
