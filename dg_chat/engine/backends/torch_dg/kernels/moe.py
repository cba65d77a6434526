"""Grouped MoE experts in three Triton launches that read the GGUF expert blocks as stored
(gpu-engine.md §6.1): `align` sorts the (token, slot) assignments by expert on the device, then
one launch computes every expert's GeGLU rows and one its down projection, each program taking
one BLOCK_M row-block of a single expert. Each K-step is `gguf_tiles.dot_tile` (a dot with the
raw integer codes, scaled after it per scale group), or its W4A8 variant `int8_dot_tile`.

Shapes are static and nothing syncs with the host, so a step can be captured in a CUDA graph
(§6.7). Matches `DiffusionGemma._moe` after routing: y[t] = Σ_slot w[t, slot] ·
down_e(gelu_tanh(gate_e(x[t])) · up_e(x[t])), e = top_i[t, slot].
"""

from __future__ import annotations

import torch

from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import INT8_TYPES, SCALE_GROUP, RawWeight, accumulate
from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton
from dg_chat.engine.backends.torch_dg.kernels.tl_math import gelu_tanh

ALIGN_CHUNK = 64
"""Assignments (and sorted slots, and row-blocks) one align program handles per step."""
MAX_EXPERTS = 256


def em_max(n_assignments: int, n_experts: int, block_m: int) -> int:
    """Rows of the static sorted layout: every assignment plus the worst-case padding of each
    expert's run up to a multiple of block_m, rounded up to block_m (§6.1)."""
    rows = n_assignments + n_experts * (block_m - 1)
    return -(-rows // block_m) * block_m


@triton.jit
def _align_kernel(ids_ptr, sorted_ptr, expert_ids_ptr, n, em_rows, n_blocks, n_programs,
                  E_PAD: tl.constexpr, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr):
    """Program p places assignments [p·CHUNK, (p+1)·CHUNK) and writes every P-th chunk of
    padding slots and row-block experts. Every program recomputes the histogram (E_PAD is small)
    so no program waits for another; writes are disjoint, so no atomics are needed."""
    pid = tl.program_id(0)
    experts = tl.arange(0, E_PAD)
    mine = pid * CHUNK + tl.arange(0, CHUNK)
    my_ids = tl.load(ids_ptr + mine, mask=mine < n, other=-1).to(tl.int32)
    counts = tl.zeros([E_PAD], tl.int32)
    rank = tl.zeros([CHUNK], tl.int32)  # earlier assignments with the same expert
    for start in range(0, n, CHUNK):
        other = start + tl.arange(0, CHUNK)
        other_ids = tl.load(ids_ptr + other, mask=other < n, other=-1).to(tl.int32)
        counts += tl.sum((other_ids[:, None] == experts[None, :]).to(tl.int32), axis=0)
        earlier = (other_ids[None, :] == my_ids[:, None]) & (other[None, :] < mine[:, None])
        rank += tl.sum(earlier.to(tl.int32), axis=1)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, axis=0)
    starts = ends - padded

    my_start = tl.sum(tl.where(my_ids[:, None] == experts[None, :], starts[None, :], 0), axis=1)
    tl.store(sorted_ptr + my_start + rank, mine, mask=mine < n)

    stride = n_programs * CHUNK
    for first in range(pid * CHUNK, em_rows, stride):
        slot = first + tl.arange(0, CHUNK)
        offset = slot[:, None] - starts[None, :]
        real = tl.sum(((offset >= 0) & (offset < counts[None, :])).to(tl.int32), axis=1) > 0
        tl.store(sorted_ptr + slot, n, mask=(slot < em_rows) & ~real)
    for first in range(pid * CHUNK, n_blocks, stride):
        block = first + tl.arange(0, CHUNK)
        row = block[:, None] * BLOCK_M
        owner = (starts[None, :] <= row) & (row < ends[None, :])
        expert = tl.sum(tl.where(owner, experts[None, :] + 1, 0), axis=1) - 1  # -1: past the used rows
        tl.store(expert_ids_ptr + block, expert, mask=block < n_blocks)


def align(top_i: torch.Tensor, n_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort the assignments a = t·k + slot of `top_i` (int [T, k], expert ids < n_experts ≤ 256)
    by expert, in one launch with no host sync (the vLLM fused_moe layout, §6.1).

    Returns sorted_ids int32 [em_max(T·k, n_experts, block_m)]: each expert's assignments as one
    run in assignment order, padded to a multiple of block_m with the sentinel T·k, the runs in
    expert order; and expert_ids int32 [em_max // block_m]: the expert of each row-block, −1 for
    the blocks past the used rows.
    """
    if not 0 < n_experts <= MAX_EXPERTS:
        raise ValueError(f"{n_experts} experts: the alignment handles 1..{MAX_EXPERTS}")
    ids = top_i.reshape(-1).contiguous()
    n = ids.numel()
    rows = em_max(n, n_experts, block_m)
    sorted_ids = torch.empty(rows, dtype=torch.int32, device=ids.device)
    expert_ids = torch.empty(rows // block_m, dtype=torch.int32, device=ids.device)
    programs = max(1, triton.cdiv(n, ALIGN_CHUNK))
    runtime.launch(_align_kernel, (programs,), ids, sorted_ids, expert_ids, n, rows, rows // block_m, programs,
                   E_PAD=triton.next_power_of_2(n_experts), BLOCK_M=block_m, CHUNK=ALIGN_CHUNK)
    return sorted_ids, expert_ids


@triton.jit
def _block_rows(sorted_ptr, block, n_assignments, BLOCK_M: tl.constexpr):
    """The assignment ids of row-block `block` and which of them are real (not padding)."""
    a = tl.load(sorted_ptr + block * BLOCK_M + tl.arange(0, BLOCK_M))
    return a, a < n_assignments


@triton.jit
def _gate_up_kernel(x_ptr, w_ptr, sorted_ptr, expert_ids_ptr, act_ptr, n_assignments, top_k, H, F, row_bytes,
                    QTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    UPCAST: tl.constexpr, INT8: tl.constexpr):
    """act[a, n] = gelu_tanh(x[a // k] · gate_e[n]) · (x[a // k] · up_e[n]) for one row-block
    (expert e) and BLOCK_N columns n of the GeGLU width F."""
    block = tl.program_id(0)
    expert = tl.load(expert_ids_ptr + block)
    if expert < 0:
        return
    a, live = _block_rows(sorted_ptr, block, n_assignments, BLOCK_M)
    tokens = a // top_k
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w = w_ptr + expert.to(tl.int64) * (2 * F) * row_bytes
    gate = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        xs = tl.load(x_ptr + tokens[:, None] * H + ks[None, :], mask=live[:, None] & (ks[None, :] < H), other=0.0)
        gate = accumulate(gate, xs, w, row_bytes, cols, k0, F, H, QTYPE, UPCAST, INT8)
        up = accumulate(up, xs, w, row_bytes, F + cols, k0, 2 * F, H, QTYPE, UPCAST, INT8)
    act = gelu_tanh(gate) * up
    tl.store(act_ptr + a[:, None] * F + cols[None, :], act.to(act_ptr.dtype.element_ty),
             mask=live[:, None] & (cols[None, :] < F))


@triton.jit
def _down_kernel(act_ptr, w_ptr, sorted_ptr, expert_ids_ptr, top_w_ptr, out_ptr, n_assignments, H, F, row_bytes,
                 QTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST: tl.constexpr, INT8: tl.constexpr):
    """out[a, n] = top_w[a] · (act[a] · down_e[n]) for one row-block (expert e) and BLOCK_N
    columns n of the hidden size H."""
    block = tl.program_id(0)
    expert = tl.load(expert_ids_ptr + block)
    if expert < 0:
        return
    a, live = _block_rows(sorted_ptr, block, n_assignments, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w = w_ptr + expert.to(tl.int64) * H * row_bytes
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, F, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        acts = tl.load(act_ptr + a[:, None] * F + ks[None, :], mask=live[:, None] & (ks[None, :] < F), other=0.0)
        acc = accumulate(acc, acts, w, row_bytes, cols, k0, H, F, QTYPE, UPCAST, INT8)
    acc *= tl.load(top_w_ptr + a, mask=live, other=0.0)[:, None]
    tl.store(out_ptr + a[:, None] * H + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=live[:, None] & (cols[None, :] < H))


def tile_sizes(qtype: int) -> tuple[int, int, int]:
    """(block_m, BLOCK_N, BLOCK_K) for a launch on weights of `qtype`. The interpreter pays per
    tensor op, not per element, so it gets few big tiles. On a GPU BLOCK_N 64 divides F = 704 and
    the K-step is two scale groups (64 values; 32 for Q6_K and 64 for float weights): the
    [2, BLOCK_N] scales of a step then hold one value per thread (4 warps), which Triton loads and
    decodes once and passes on through shared memory; a [1, BLOCK_N] tile is instead reloaded
    and decoded by each of the 8 lanes that hold an accumulator column (Q4_K gate_up on sm_89:
    25.6 -> 17.5 SASS instructions per weight element). BLOCK_M 32 holds an expert's rows at
    T = 256, top-8 (mean 16, max 27): its weights are unpacked once per step, ~12% fewer
    instructions per step than BLOCK_M 16 (offline sm_89 counts); tiles stay far below ~100 KB of
    shared memory (RTX 4090)."""
    if runtime.interpreting():
        return 16, 256, 512
    return 32, 64, 2 * SCALE_GROUP.get(qtype, 32)


def experts(x: torch.Tensor, gate_up: RawWeight, down: RawWeight, top_i: torch.Tensor, top_w: torch.Tensor,
            *, block_m: int | None = None, int8_activations: bool = False) -> torch.Tensor:
    """The routed experts' sum: x [T, H] (float32, float16 or bfloat16) -> [T, H] in x.dtype.

    gate_up: [E, 2F, H] (rows 0..F-1 gate, F..2F-1 up); down: [E, H, F]; top_i int [T, k]
    expert ids; top_w float32 [T, k] routing weights (renormalised and times the per-expert
    scale by the caller). Three launches (align, gate_up, down) and one torch sum over the k
    slots in slot order; the GeGLU activations are kept in x.dtype between the launches.

    int8_activations (W4A8, weights Q4_K/Q5_0/Q8_0/Q6_K only): both matmuls quantise their input
    per 32 values to int8 (llama.cpp q8_1 rounding) and take exact int32 dots per 32-block with
    an fp32 epilogue; this adds the activation quantisation error (~1e-2 relative, see tests).
    """
    n_experts, width, hidden = gate_up.data.shape[0], gate_up.rows // 2, gate_up.cols
    tokens, top_k = top_i.shape
    if x.shape != (tokens, hidden) or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x {tuple(x.shape)} {x.dtype}: expected float [{tokens}, {hidden}]")
    if gate_up.data.dim() != 3 or down.data.shape[:2] != (n_experts, hidden) or down.cols != width:
        raise ValueError(f"experts gate_up {tuple(gate_up.data.shape)} / down {tuple(down.data.shape)} do not match")
    if int8_activations and not {gate_up.qtype, down.qtype} <= INT8_TYPES:
        raise ValueError("int8 activations need Q4_K, Q5_0, Q8_0 or Q6_K expert weights")
    default_m, block_n, gate_up_k = tile_sizes(gate_up.qtype)
    down_k = tile_sizes(down.qtype)[2]
    block_m = block_m or default_m
    if block_m < 16 or block_m & (block_m - 1):
        raise ValueError(f"block_m {block_m}: tl.dot needs a power of two >= 16")
    sorted_ids, expert_ids = align(top_i, n_experts, block_m)
    n = tokens * top_k
    act = torch.empty(n, width, dtype=x.dtype, device=x.device)
    out = torch.empty(n, hidden, dtype=x.dtype, device=x.device)
    meta = dict(BLOCK_M=block_m, BLOCK_N=block_n, UPCAST=runtime.interpreting(), INT8=int8_activations)
    blocks = expert_ids.numel()
    runtime.launch(_gate_up_kernel, (blocks, triton.cdiv(width, block_n)), x.contiguous(), gate_up.data, sorted_ids,
                   expert_ids, act, n, top_k, hidden, width, gate_up.row_bytes, QTYPE=gate_up.qtype,
                   BLOCK_K=gate_up_k, **meta)
    runtime.launch(_down_kernel, (blocks, triton.cdiv(hidden, block_n)), act, down.data, sorted_ids, expert_ids,
                   top_w.to(torch.float32).contiguous(), out, n, hidden, width, down.row_bytes, QTYPE=down.qtype,
                   BLOCK_K=down_k, **meta)
    return out.view(tokens, top_k, hidden).sum(dim=1)
