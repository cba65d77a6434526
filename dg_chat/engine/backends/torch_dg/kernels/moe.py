"""Grouped MoE experts in three Triton launches that read the GGUF expert blocks as stored
(gpu-engine.md §6.1): `align` sorts the (token, slot) assignments by expert on the device, then
one launch computes every expert's GeGLU rows and one its down projection, each program taking
one BLOCK_M row-block of a single expert.

Shapes are static and nothing syncs with the host, so a step can be captured in a CUDA graph
(§6.7). Matches `DiffusionGemma._moe` after routing: y[t] = Σ_slot w[t, slot] ·
down_e(gelu_tanh(gate_e(x[t])) · up_e(x[t])), e = top_i[t, slot].
"""

from __future__ import annotations

import torch
from gguf.constants import GGMLQuantizationType

from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import (Q4_K, Q5_0, Q8_0, RawWeight, _f16, _i8, _u8,
                                                                   dequant_tile)
from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton
from triton.language.extra.cuda import libdevice

ALIGN_CHUNK = 64
"""Assignments (and sorted slots, and row-blocks) one align program handles per step."""
MAX_EXPERTS = 256
INT8_TYPES = frozenset({GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q8_0})
"""Expert weight types the int8-activation (W4A8) path reads."""

_GELU_BETA = tl.constexpr(0.7978845608028654)  # sqrt(2/pi): torch's kBeta = M_SQRT2 * M_2_SQRTPI * 0.5
_GELU_KAPPA = tl.constexpr(0.044715)


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
def _tanh(x, LIBDEVICE: tl.constexpr):
    if LIBDEVICE:
        return libdevice.tanh(x)  # tanhf, what torch's CUDA gelu calls
    else:  # the interpreter has no libdevice; exp of -|x| never overflows
        t = tl.exp(-2.0 * tl.abs(x))
        magnitude = (1.0 - t) / (1.0 + t)
        return tl.where(x < 0, -magnitude, magnitude)


@triton.jit
def _gelu_tanh(x, LIBDEVICE: tl.constexpr):
    """F.gelu(x, approximate="tanh") in fp32, in torch's order of operations."""
    inner = _GELU_BETA * (x + _GELU_KAPPA * (x * x * x))
    return 0.5 * x * (1.0 + _tanh(inner, LIBDEVICE))


@triton.jit
def _mma(a, w, acc, UPCAST: tl.constexpr):
    """acc + a @ w with W rounded to a's dtype (fp32 products stay IEEE, not TF32). UPCAST (the
    interpreter, whose bf16 dot is broken) multiplies the same rounded operands in fp32."""
    w = w.to(a.dtype)
    if UPCAST:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a, w, acc, input_precision="ieee")


@triton.jit
def _codes(w_ptr, row_bytes, rows, cols, n_rows, n_cols, QTYPE: tl.constexpr):
    """int32 [len(cols), len(rows)]: the integer quants of W[rows, cols]ᵀ (Q4_K: q in 0..15,
    Q5_0: q − 16, Q8_0: q), 0 outside the matrix; the value is scale·code − offset per 32."""
    r = rows[None, :].to(tl.int64)
    c = cols[:, None]
    mask = (r < n_rows) & (c < n_cols)
    row = w_ptr + r * row_bytes
    if QTYPE == Q8_0:
        code = _i8(row, (c // 32) * 34 + 2 + c % 32, mask)
    elif QTYPE == Q5_0:
        j = c % 32
        base = (c // 32) * 22
        byte = _u8(row, base + 6 + j % 16, mask)
        high = (_u8(row, base + 2 + j // 8, mask) >> (j % 8)) & 1
        code = (tl.where(j < 16, byte & 15, byte >> 4) | (high << 4)) - 16
    else:
        tl.static_assert(QTYPE == Q4_K, "int8 activations need Q4_K, Q5_0 or Q8_0 weights")
        t = c % 256
        byte = _u8(row, (c // 256) * 144 + 16 + (t // 64) * 32 + t % 32, mask)
        code = tl.where((t % 64) < 32, byte & 15, byte >> 4)
    return tl.where(mask, code, 0)


@triton.jit
def _block_scales(w_ptr, row_bytes, rows, blocks, n_rows, n_blocks, QTYPE: tl.constexpr):
    """fp32 [len(blocks), len(rows)] scale and offset of each 32-value block of each row, exact
    (gpu-engine.md §5.2): Q4_K d·sc_j and dmin·m_j; Q5_0/Q8_0 d and 0."""
    r = rows[None, :].to(tl.int64)
    b = blocks[:, None]
    mask = (r < n_rows) & (b < n_blocks)
    row = w_ptr + r * row_bytes
    if QTYPE == Q4_K:
        base = (b // 8) * 144
        j = b % 8
        s0 = _u8(row, base + 4 + j, mask)
        s1 = _u8(row, base + 8 + j, mask)
        s2 = _u8(row, base + tl.where(j >= 4, j, j + 4), mask)
        sc = tl.where(j < 4, s0 & 63, (s1 & 15) | ((s2 >> 6) << 4))
        mn = tl.where(j < 4, s1 & 63, (s1 >> 4) | ((s0 >> 6) << 4))
        scale = _f16(row, base, mask) * sc.to(tl.float32)
        offset = _f16(row, base + 2, mask) * mn.to(tl.float32)
    elif QTYPE == Q8_0:
        scale = _f16(row, b * 34, mask)
        offset = tl.zeros_like(scale)
    else:
        scale = _f16(row, b * 22, mask)
        offset = tl.zeros_like(scale)
    return scale, offset


@triton.jit
def _quantize(a, BLOCK_M: tl.constexpr, NB: tl.constexpr):
    """a [BLOCK_M, NB·32] per 32 values to int8 as llama.cpp's q8_1 does (d = amax/127, round
    half away from zero): codes [BLOCK_M, NB, 32] int8, scales d [BLOCK_M, NB] fp32 and the
    code sums [BLOCK_M, NB] fp32 (for Q4_K's offsets)."""
    a = tl.reshape(a.to(tl.float32), [BLOCK_M, NB, 32])
    d = tl.max(tl.abs(a), axis=2) / 127.0
    v = a * tl.where(d > 0, 1.0 / tl.where(d > 0, d, 1.0), 0.0)[:, :, None]  # all-zero block: codes 0
    q = tl.where(v < 0, -tl.floor(0.5 - v), tl.floor(v + 0.5))
    return q.to(tl.int8), d, tl.sum(q, axis=2)


@triton.jit
def _int8_mma(acc, a, w_ptr, row_bytes, rows, ks, n_rows, n_cols, QTYPE: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc + a @ W[rows, ks]ᵀ with a quantised to int8 per 32 (W4A8, gpu-engine.md §6.2): one
    exact int32 dot per 32-block (a batched dot over the BLOCK_K // 32 blocks), then the fp32
    epilogue da·(scale·Σ q·qa − offset·Σ qa) per block."""
    NB: tl.constexpr = BLOCK_K // 32
    qa, da, sa = _quantize(a, BLOCK_M, NB)
    codes = tl.reshape(_codes(w_ptr, row_bytes, rows, ks, n_rows, n_cols, QTYPE).to(tl.int8), [NB, 32, BLOCK_N])
    blocks = tl.min(ks, axis=0) // 32 + tl.arange(0, NB)
    scale, offset = _block_scales(w_ptr, row_bytes, rows, blocks, n_rows, n_cols // 32, QTYPE)
    dots = tl.dot(tl.permute(qa, (1, 0, 2)), codes)  # [NB, BLOCK_M, BLOCK_N] int32
    da = tl.permute(da, (1, 0))[:, :, None]
    sa = tl.permute(sa, (1, 0))[:, :, None]
    return acc + tl.sum(da * (scale[:, None, :] * dots.to(tl.float32) - offset[:, None, :] * sa), axis=0)


@triton.jit
def _accumulate(acc, a, w_ptr, row_bytes, rows, ks, n_rows, n_cols, QTYPE: tl.constexpr, UPCAST: tl.constexpr,
                INT8: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc + a [BLOCK_M, BLOCK_K] @ W[rows, ks]ᵀ, W read from its GGUF blocks."""
    if INT8:
        return _int8_mma(acc, a, w_ptr, row_bytes, rows, ks, n_rows, n_cols, QTYPE, BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        return _mma(a, dequant_tile(w_ptr, row_bytes, rows, ks, n_rows, n_cols, QTYPE), acc, UPCAST)


@triton.jit
def _block_rows(sorted_ptr, block, n_assignments, BLOCK_M: tl.constexpr):
    """The assignment ids of row-block `block` and which of them are real (not padding)."""
    a = tl.load(sorted_ptr + block * BLOCK_M + tl.arange(0, BLOCK_M))
    return a, a < n_assignments


@triton.jit
def _gate_up_kernel(x_ptr, w_ptr, sorted_ptr, expert_ids_ptr, act_ptr, n_assignments, top_k, H, F, row_bytes,
                    QTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    UPCAST: tl.constexpr, INT8: tl.constexpr, LIBDEVICE: tl.constexpr):
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
        gate = _accumulate(gate, xs, w, row_bytes, cols, ks, F, H, QTYPE, UPCAST, INT8, BLOCK_M, BLOCK_N, BLOCK_K)
        up = _accumulate(up, xs, w, row_bytes, F + cols, ks, 2 * F, H, QTYPE, UPCAST, INT8, BLOCK_M, BLOCK_N,
                         BLOCK_K)
    act = _gelu_tanh(gate, LIBDEVICE) * up
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
        acc = _accumulate(acc, acts, w, row_bytes, cols, ks, H, F, QTYPE, UPCAST, INT8, BLOCK_M, BLOCK_N, BLOCK_K)
    acc *= tl.load(top_w_ptr + a, mask=live, other=0.0)[:, None]
    tl.store(out_ptr + a[:, None] * H + cols[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=live[:, None] & (cols[None, :] < H))


def tile_sizes() -> tuple[int, int, int]:
    """(block_m, BLOCK_N, BLOCK_K) for both launches. The interpreter pays per call of a jit
    helper (dequant_tile makes ~15), not per element, so it gets few big tiles; on a GPU 64 x 64
    tiles divide F = 704 and K = 704 exactly and, with BLOCK_M 16, two weight tiles plus the
    activations stay far below ~100 KB of shared memory (RTX 4090)."""
    if runtime.interpreting():
        return 16, 256, 512
    return 16, 64, 64


def experts(x: torch.Tensor, gate_up: RawWeight, down: RawWeight, top_i: torch.Tensor, top_w: torch.Tensor,
            *, block_m: int | None = None, int8_activations: bool = False) -> torch.Tensor:
    """The routed experts' sum: x [T, H] (float32, float16 or bfloat16) -> [T, H] in x.dtype.

    gate_up: [E, 2F, H] (rows 0..F-1 gate, F..2F-1 up); down: [E, H, F]; top_i int [T, k]
    expert ids; top_w float32 [T, k] routing weights (renormalised and times the per-expert
    scale by the caller). Three launches (align, gate_up, down) and one torch sum over the k
    slots in slot order; the GeGLU activations are kept in x.dtype between the launches.

    int8_activations (W4A8, weights Q4_K/Q5_0/Q8_0 only): both matmuls quantise their input
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
        raise ValueError("int8 activations need Q4_K, Q5_0 or Q8_0 expert weights")
    default_m, block_n, block_k = tile_sizes()
    block_m = block_m or default_m
    if block_m < 16 or block_m & (block_m - 1):
        raise ValueError(f"block_m {block_m}: tl.dot needs a power of two >= 16")
    sorted_ids, expert_ids = align(top_i, n_experts, block_m)
    n = tokens * top_k
    act = torch.empty(n, width, dtype=x.dtype, device=x.device)
    out = torch.empty(n, hidden, dtype=x.dtype, device=x.device)
    meta = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, UPCAST=runtime.interpreting(),
                INT8=int8_activations)
    blocks = expert_ids.numel()
    runtime.launch(_gate_up_kernel, (blocks, triton.cdiv(width, block_n)), x.contiguous(), gate_up.data, sorted_ids,
                   expert_ids, act, n, top_k, hidden, width, gate_up.row_bytes, QTYPE=gate_up.qtype,
                   LIBDEVICE=not runtime.interpreting(), **meta)
    runtime.launch(_down_kernel, (blocks, triton.cdiv(hidden, block_n)), act, down.data, sorted_ids, expert_ids,
                   top_w.to(torch.float32).contiguous(), out, n, hidden, width, down.row_bytes, QTYPE=down.qtype,
                   **meta)
    return out.view(tokens, top_k, hidden).sum(dim=1)
