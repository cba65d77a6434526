"""Every Triton kernel variant the fast path launches compiles for real GPUs (sm_89: RTX 4090,
sm_90: H100/H200), offline: the interpreter the other kernel tests run under accepts code that a
real compile rejects, and is launched with other tile sizes than a GPU gets.

The launches are recorded, not written by hand (tests/support/cuda_compile.py, `record_step`):
prefills of 256, 44, 20 and 5 tokens (every BLOCK_M a prompt can get), a block's first canvas and
two fused-sampler denoising steps (the first without, the second with self-conditioning), every
launch configuration chosen as on a GPU, of three models:

- the tiny DiffusionGemma with the published Q4_K_M type mix (hidden 256, 8 experts, top-2),
  with the published canvas (256) and a vocabulary with the published sampler layout (65,536:
  32 chunks of 2,048 columns, like 262,144), in float32 (what the CPU runs)
- the same in bfloat16 (what CUDA runs: `TorchBackend` computes in bf16 there, with its norm
  vectors resident in bf16 and the logits, lse and routing weights in float32)
- the published widths in bfloat16 (hidden 2816, head dims 256/512, 128 experts, top-8,
  vocabulary 262,144) in two layers, with uninitialised weights (`PublishedWidths`): the
  constexprs derived from the width (the norms' BLOCK 4096 with 8 warps, E_PAD 128, ...) are the
  published model's.

The kernels are not run while recording: a decode step and a sampler step never read a device
value on the host (test_triton_model checks it) and a prefill's host code depends on lengths
only, so what is launched does not depend on what the kernels compute. Each distinct variant
(Triton's own specialisation of the recorded arguments: dtypes, ints equal to 1, multiples of
16) is compiled once per target down to a cubin by ptxas.

Run with -s to see registers, spills (stack/local bytes) and shared memory per variant.
"""

from __future__ import annotations

import time

import pytest
import torch

from tests.support.cuda_compile import (
    TARGETS,
    PublishedWidths,
    Variant,
    cuda_backend_unavailable,
    record_step,
    report,
    run_compile,
    triton_backend,
)

pytest.importorskip("transformers")
if reason := cuda_backend_unavailable():
    pytest.skip(reason, allow_module_level=True)

from dg_chat.engine.backends.torch_dg.kernels import runtime  # after the skip: imports triton
from tests.support.tiny_dg import tiny_q4_k_m

if runtime.unavailable_reason(torch.device("cpu")):
    pytest.skip("recording runs the host code under TRITON_INTERPRET=1", allow_module_level=True)

CANVAS = 256
"""The published canvas: decode steps of M = 256 rows (BLOCK_M 64), prefill chunks of 256."""
VOCAB = 65536


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> list[Variant]:
    """The compiled variants of the launches of three models: the tiny Q4_K_M in float32 and in
    bf16, and the published widths in bf16 (what a GPU runs)."""
    path = tiny_q4_k_m(tmp_path_factory.mktemp("q4_k_m"), canvas_length=CANVAS, vocab_size=VOCAB)
    start = time.perf_counter()
    launches = (record_step(triton_backend(path, torch.float32), "tiny-fp32")
                + record_step(triton_backend(path, torch.bfloat16), "tiny-bf16")
                + record_step(PublishedWidths(), "published-bf16"))
    recorded = time.perf_counter()
    compiled = run_compile(launches)
    print(f"\n{len(launches)} launches recorded in {recorded - start:.1f}s, "
          f"{len(compiled)} variants compiled in {time.perf_counter() - recorded:.0f}s\n{report(compiled)}")
    return compiled


def test_every_launched_kernel_variant_compiles_for_sm89_and_sm90(variants):
    """A variant that fails names its target, kernel, constexprs and tensor dtypes, the steps
    that launch it and the compiler's error."""
    failures = [v for v in variants if v.error]
    assert not failures, "\n\n".join(f"{v.describe()}\n  launched in: {', '.join(v.phases)}\n  {v.error}"
                                     for v in failures)


def test_the_recording_covers_every_kernel_in_both_dtypes_for_both_targets(variants):
    """Guards the test itself: every kernel of the fast path was launched and compiled for each
    target, and the bf16 model really produced bf16 activations."""
    kernels = {
        "gemm": {"_linear_kernel", "_linear_glu_kernel", "_softmax_matmul_kernel", "_settled_weights_kernel",
                 "_settled_combine_kernel", "_embedding_kernel"},
        "moe": {"_align_kernel", "_gate_up_kernel", "_down_kernel"},
        "fused_ops": {"_rms_norm_kernel", "_post_attention_kernel", "_head_norm_rope_kernel", "_route_kernel",
                      "_layer_tail_kernel"},
        "sampler": {"_row_partials_kernel", "_combine_kernel", "_canvas_kernel"},
    }
    expected = {name for names in kernels.values() for name in names}
    for target in TARGETS:
        compiled = {v.kernel.split(":")[1] for v in variants if v.target == target}
        assert compiled >= expected, f"{target}: never launched: {sorted(expected - compiled)}"
        x_types = {v.signature["x_ptr"] for v in variants
                   if v.target == target and v.kernel.endswith(":_linear_kernel")}
        assert x_types == {"*fp32", "*bf16"}, x_types
        published = {(v.kernel.split(":")[1], v.constexprs.get("BLOCK") or v.constexprs.get("E_PAD"))
                     for v in variants if v.target == target and any("published" in p for p in v.phases)}
        # the published widths' hidden 2816, full-attention head_dim 512 and 128 experts
        assert {("_rms_norm_kernel", "4096"), ("_head_norm_rope_kernel", "256"), ("_align_kernel", "128")} <= published
