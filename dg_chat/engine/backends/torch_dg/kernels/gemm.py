"""Dense GEMMs on GGUF weights as stored (gpu-engine.md §6.2, §6.3), never through a dequantised
copy of the weight: `linear` and `linear_glu` take each K-step with `gguf_tiles.dot_tile` (a dot
with the integer codes, scaled after it per scale group) or, given activations that
`quantize_activations` quantised once to int8 per 32 values (W4A8), with `gguf_tiles.q8_dot_tile`
(exact int32 dots, an fp32 epilogue per block); `softmax_matmul` and `embedding` read transposed
tiles and dequantise them in registers with `gguf_tiles.dequant_tile`.

- `linear`: y = x @ Wᵀ, optionally soft-capped (the tied LM head).
- `linear_glu`: gelu_tanh(x @ gateᵀ) * (x @ upᵀ) in one launch (the dense GeGLU MLPs).
- `quantize_activations`: x to int8 per 32 values (llama.cpp's q8_1), once per input, for the
  W4A8 `linear` / `linear_glu` of every weight that reads it.
- `softmax_matmul`: softmax(logits) @ E over the vocabulary (dense self-conditioning), with a
  shortcut for the rows a step has settled (`SettledRows`).
- `embedding`: rows of E, scaled.

All accumulate in fp32. fp32 activations meet fp32 weights in IEEE products (never TF32);
fp16/bf16 activations meet the integer codes (exact in their type) or, for float weights and in
`softmax_matmul`, the weight tile rounded to their type: tensor cores on a GPU. Under the
interpreter, whose bf16 `tl.dot` is broken (§7.1), both operands are upcast to fp32 after that
rounding. Shapes are static and nothing synchronises with the host, so the functions can be
captured in a CUDA graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from gguf.constants import GGMLQuantizationType as Q

from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import (
    INT8_TYPES,
    SCALE_GROUP,
    RawWeight,
    dequant_tile,
    dot_tile,
    q8_dot_tile,
    quantize_q8,
)
from dg_chat.engine.backends.torch_dg.kernels.runtime import interpreting, launch, tl, triton, unavailable_reason
from dg_chat.engine.backends.torch_dg.kernels.tl_math import gelu_tanh, mma, tanh

ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


@dataclass(frozen=True)
class Q8Activations:
    """Activations x [M, K] quantised per 32 values (gpu-engine.md §6.2; llama.cpp's q8_1 block
    as three planes): x[m, 32b + j] ≈ da[b, m]·qa[m, 32b + j]. The per-block planes run along
    the rows, so that a K-step reads its [blocks, rows] tile of them in contiguous rows."""

    qa: torch.Tensor
    """int8 [M, K]: the codes, x·(1/da) rounded in fp32, ties away from zero."""
    da: torch.Tensor
    """fp32 [K/32, M]: the scale of each block, amax/127 (0 for an all-zero block)."""
    sa: torch.Tensor
    """fp32 [K/32, M]: the sum of each block's codes (exact; Q4_K's offsets multiply it)."""
    dtype: torch.dtype
    """The dtype x had: what the GEMMs return by default."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.qa.shape[0], self.qa.shape[1]

    @property
    def device(self) -> torch.device:
        return self.qa.device


# ---------------------------------------------------------------------------------------------
# Device helpers


@triton.jit
def _x_tile(x_ptr, rows, cols, n_rows, n_cols):
    """x[rows, cols] of a row-major [n_rows, n_cols] matrix, 0 outside it."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    return tl.load(x_ptr + rows[:, None].to(tl.int64) * n_cols + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _store(y_ptr, y, rows, cols, n_rows, n_cols):
    """y[rows, cols] = y (fp32, rounded once to y_ptr's type) in a row-major [n_rows, n_cols]."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _q8_scales(da_ptr, sa_ptr, rows, k0, n_rows, n_cols, NB: tl.constexpr):
    """The da and sa tiles fp32 [NB, len(rows)] of the 32-blocks k0/32 .. k0/32+NB-1 (`Q8Activations`
    planes of an [n_rows, n_cols] input), 0 outside it."""
    blocks = k0 // 32 + tl.arange(0, NB)
    return (_x_tile(da_ptr, blocks, rows, n_cols // 32, n_rows),
            _x_tile(sa_ptr, blocks, rows, n_cols // 32, n_rows))


@triton.jit
def _tile_ids(n_rows, BLOCK_M: tl.constexpr):
    """(row tile, column tile) of this program; consecutive programs share a weight tile, so
    that the row tiles after the first find it in L2."""
    m_tiles = tl.cdiv(n_rows, BLOCK_M)
    pid = tl.program_id(0)
    return pid % m_tiles, pid // m_tiles


# ---------------------------------------------------------------------------------------------
# Kernels


# INT8: x_ptr holds `Q8Activations.qa` and da_ptr, sa_ptr its planes (W4A8); else they are None.
# The W4A8 K-steps accumulate the transposed tile [BLOCK_N, BLOCK_M] (`q8_dot_tile`'s TRANS).


@triton.jit
def _linear_kernel(x_ptr, da_ptr, sa_ptr, w_ptr, y_ptr, M, N, K, row_bytes, softcap,
                   QTYPE: tl.constexpr, SOFTCAP: tl.constexpr, UPCAST: tl.constexpr, INT8: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, BLOCK_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT8:
        acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            qa = _x_tile(x_ptr, rows, k0 + tl.arange(0, BLOCK_K), M, K)
            da, sa = _q8_scales(da_ptr, sa_ptr, rows, k0, M, K, BLOCK_K // 32)
            acc = q8_dot_tile(acc, qa, da, sa, w_ptr, row_bytes, cols, k0, N, K, QTYPE, True)
        acc = tl.trans(acc)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = _x_tile(x_ptr, rows, k0 + tl.arange(0, BLOCK_K), M, K)
            acc = dot_tile(acc, a, w_ptr, row_bytes, cols, k0, N, K, QTYPE, UPCAST)
    if SOFTCAP:
        acc = softcap * tanh(acc / softcap)
    _store(y_ptr, acc, rows, cols, M, N)


@triton.jit
def _linear_glu_kernel(x_ptr, da_ptr, sa_ptr, gate_ptr, up_ptr, y_ptr, M, F, K, gate_row_bytes, up_row_bytes,
                       GATE_QTYPE: tl.constexpr, UP_QTYPE: tl.constexpr, UPCAST: tl.constexpr,
                       INT8: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, BLOCK_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT8:
        gate = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        up = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            qa = _x_tile(x_ptr, rows, k0 + tl.arange(0, BLOCK_K), M, K)
            da, sa = _q8_scales(da_ptr, sa_ptr, rows, k0, M, K, BLOCK_K // 32)
            gate = q8_dot_tile(gate, qa, da, sa, gate_ptr, gate_row_bytes, cols, k0, F, K, GATE_QTYPE, True)
            up = q8_dot_tile(up, qa, da, sa, up_ptr, up_row_bytes, cols, k0, F, K, UP_QTYPE, True)
        y = tl.trans(gelu_tanh(gate) * up)
    else:
        gate = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = _x_tile(x_ptr, rows, k0 + tl.arange(0, BLOCK_K), M, K)
            gate = dot_tile(gate, a, gate_ptr, gate_row_bytes, cols, k0, F, K, GATE_QTYPE, UPCAST)
            up = dot_tile(up, a, up_ptr, up_row_bytes, cols, k0, F, K, UP_QTYPE, UPCAST)
        y = gelu_tanh(gate) * up
    _store(y_ptr, y, rows, cols, M, F)


@triton.jit
def _quantize_q8_kernel(x_ptr, qa_ptr, da_ptr, sa_ptr, M, K, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    qa, da, sa = quantize_q8(_x_tile(x_ptr, rows, cols, M, K))
    _store(qa_ptr, qa, rows, cols, M, K)
    blocks = tl.program_id(1) * (BLOCK_K // 32) + tl.arange(0, BLOCK_K // 32)
    _store(da_ptr, da, blocks, rows, K // 32, M)
    _store(sa_ptr, sa, blocks, rows, K // 32, M)


@triton.jit
def _settled_weights_kernel(logits_ptr, lse_ptr, candidates_ptr, weights_ptr, settled_ptr, log_floor, least_mass,
                            M, V, N_CAND, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per row of the [M, V] softmax: settled (int32) where its candidates of p >= exp(log_floor)
    hold at least `least_mass`, and then their p as the weights of the shortcut (0 elsewhere, and in
    every other row). A NaN row is never settled: it stays dense and comes out NaN."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, BLOCK_C)
    mask = (rows < M)[:, None] & (slots < N_CAND)[None, :]
    at = rows.to(tl.int64)[:, None] * N_CAND + slots[None, :]
    ids = tl.load(candidates_ptr + at, mask=mask, other=V)
    inside = mask & (ids < V)
    log_p = (tl.load(logits_ptr + rows.to(tl.int64)[:, None] * V + ids, mask=inside, other=float("-inf"))
             - tl.load(lse_ptr + rows, mask=rows < M, other=0.0)[:, None])
    p = tl.where(inside & (log_p >= log_floor), tl.exp(log_p), 0.0)
    settled = tl.sum(p, axis=1) >= least_mass
    tl.store(weights_ptr + at, tl.where(settled[:, None], p, 0.0), mask=mask)
    tl.store(settled_ptr + rows, settled.to(tl.int32), mask=rows < M)


@triton.jit
def _unsettled_rows(settled_ptr, slots, M, M_ALL: tl.constexpr):
    """(rows, count): the rows that are not settled, in order, at positions `slots` (M at slots
    past the last); count: how many."""
    every = tl.arange(0, M_ALL)
    unsettled = (every < M) & (tl.load(settled_ptr + every, mask=every < M, other=1) == 0)
    rank = tl.cumsum(unsettled.to(tl.int32), 0) - 1
    picked = unsettled[None, :] & (rank[None, :] == slots[:, None])  # [len(slots), M_ALL]
    rows = tl.sum(tl.where(picked, every[None, :], 0), 1)
    count = tl.sum(unsettled.to(tl.int32), 0)
    return tl.where(slots < count, rows, M), count


@triton.jit
def _softmax_matmul_kernel(logits_ptr, lse_ptr, w_ptr, part_ptr, settled_ptr, M, V, K, row_bytes,
                           v_per_split, QTYPE: tl.constexpr, OPERAND: tl.constexpr, UPCAST: tl.constexpr,
                           SKIP_SETTLED: tl.constexpr, M_ALL: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr):
    # Computes the transposed partial sum Eᵀ·Pᵀ [BLOCK_K, BLOCK_M]: dequant_tile already returns
    # Eᵀ tiles, so neither operand needs a transpose.
    pid_k = tl.program_id(0)
    split = tl.program_id(1)
    slots = tl.program_id(2) * BLOCK_M + tl.arange(0, BLOCK_M)
    v_start = split * v_per_split
    v_stop = v_start + v_per_split
    if SKIP_SETTLED:
        # row tiles over the unsettled rows only: the tiles past them read nothing of E
        rows, count = _unsettled_rows(settled_ptr, slots, M, M_ALL)
        v_stop = tl.where(tl.program_id(2) * BLOCK_M < count, v_stop, v_start)
    else:
        rows = slots
    ks = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    lse = tl.load(lse_ptr + rows, mask=rows < M, other=0.0)
    row_start = rows.to(tl.int64) * V
    acc = tl.zeros((BLOCK_K, BLOCK_M), tl.float32)
    for v0 in range(v_start, v_stop, BLOCK_V):
        vs = v0 + tl.arange(0, BLOCK_V)
        mask = (vs[:, None] < V) & (rows[None, :] < M)
        logits = tl.load(logits_ptr + row_start[None, :] + vs[:, None], mask=mask, other=-float("inf"))
        p = tl.exp(logits - lse[None, :])  # [BLOCK_V, BLOCK_M]; 0 where masked
        e = dequant_tile(w_ptr, row_bytes, vs, ks, V, K, QTYPE)  # [BLOCK_K, BLOCK_V]
        acc = mma(acc, e.to(OPERAND), p.to(OPERAND), UPCAST)
    part = part_ptr + split.to(tl.int64) * M * K
    _store(part, tl.trans(acc), rows, ks, M, K)


@triton.jit
def _settled_combine_kernel(part_ptr, candidates_ptr, weights_ptr, settled_ptr, w_ptr, mean_ptr, y_ptr,
                            M, V, K, row_bytes, N_CAND, SPLIT: tl.constexpr, QTYPE: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    settled = tl.load(settled_ptr + rows, mask=rows < M, other=0) != 0
    kept = tl.zeros((BLOCK_M,), tl.float32)
    shortcut = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    for j in range(N_CAND):
        at = rows.to(tl.int64) * N_CAND + j
        p = tl.load(weights_ptr + at, mask=rows < M, other=0.0)
        if tl.max(p, axis=0) > 0.0:  # most candidates are below the floor in every row of the tile
            ids = tl.where(p > 0.0, tl.load(candidates_ptr + at, mask=rows < M, other=V), V)  # V: read as 0
            shortcut += p[:, None] * tl.trans(dequant_tile(w_ptr, row_bytes, ids, ks, V, K, QTYPE))
            kept += p
    mean = tl.load(mean_ptr + ks, mask=ks < K, other=0.0)
    shortcut += (1.0 - kept)[:, None] * mean[None, :]
    dense = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    unsettled = tl.where(settled, M, rows)  # the partials of settled rows were never written
    for s in tl.static_range(SPLIT):
        dense += _x_tile(part_ptr + s * M * K, unsettled, ks, M, K)
    _store(y_ptr, tl.where(settled[:, None], shortcut, dense), rows, ks, M, K)


@triton.jit
def _embedding_kernel(ids_ptr, w_ptr, y_ptr, scale_ptr, scale_value, M, V, K, row_bytes,
                      QTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    ks = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    ids = tl.load(ids_ptr + rows, mask=rows < M, other=V)  # V: past the table, dequantised as 0
    scale = scale_value
    if scale_ptr is not None:
        scale = tl.load(scale_ptr).to(tl.float32)
    e = dequant_tile(w_ptr, row_bytes, ids, ks, V, K, QTYPE)  # [BLOCK_K, BLOCK_M]
    _store(y_ptr, tl.trans(e * scale), rows, ks, M, K)


# ---------------------------------------------------------------------------------------------
# Block sizes: big tiles under the interpreter (each program iteration costs milliseconds of
# numpy), GPU-sane ones otherwise: tl.dot dims >= 16, powers of two, <= 50 KB of shared memory,
# and no register spills in an offline sm_89 compile (fp16/bf16 activations). They are untuned
# first cuts: timing needs a GPU (§7.3). `dot_tile` applies its scales to the accumulator: a
# [groups, BLOCK_N] scale tile with fewer values than threads is loaded and decoded again by every
# lane that holds an accumulator column (Triton rematerialises small loads in the consumer's
# layout); with one value per thread or more it is decoded once and moved through shared memory.


def _pow2(n: int, lo: int, hi: int) -> int:
    """The power of two >= n, clamped to [lo, hi]."""
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _k_step(groups: int, *qtypes: int) -> int:
    """A GPU K-step of `groups` scale groups of the widest-grouped of these weight types (a group
    of 32 for float types)."""
    return groups * max(SCALE_GROUP.get(q, 32) for q in qtypes)


def _linear_config(m: int, n: int, qtype: int) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=_pow2(n, 16, 128), BLOCK_K=256)
    if qtype not in SCALE_GROUP:  # float weights (the router), dequantised: a 32 x 64 tile
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=3)
    # 2 x 128 scales for 256 threads. Offline sm_89 SASS of the K-loop, instructions per weight
    # element (`scripts/bench.py compile --sass`, BLOCK_M 64, bf16 / int8 activations): Q4_K
    # 34.7 / 37.0, Q5_0 41.5 / 46.3, Q8_0 29.8 / 32.9, Q6_K 62.6; earlier, with one group and BLOCK_N 64,
    # 58.1, 43.1, 87.2 (the loop that dequantised every element: 42.6, 49.5, 60.8)
    return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=128, BLOCK_K=_k_step(2, qtype), num_warps=8, num_stages=3)


def _linear_glu_config(m: int, f: int, gate_qtype: int, up_qtype: int, dtype: torch.dtype) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=_pow2(f, 16, 128), BLOCK_K=256)
    if dtype == torch.float32:  # FMA dots hold whole K-slices in registers: small 2-D steps
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=32, BLOCK_K=_k_step(1, gate_qtype, up_qtype), num_warps=8,
                    num_stages=3)
    # two weight tiles, accumulators and partials per step: 2 x 64 scales for 128 threads, and
    # half the rows of `linear`. sm_89 SASS, Q4_K, instructions per weight element and row tile:
    # 22.8 (x 8 row tiles at M = 256); BLOCK_M 64 with 8 warps, one group and BLOCK_N 32: 129.2
    # (x 4); the loop that dequantised every element: 54.6 (x 4)
    return dict(BLOCK_M=_pow2(m, 16, 32), BLOCK_N=64, BLOCK_K=_k_step(2, gate_qtype, up_qtype), num_warps=4,
                num_stages=3)


# W4A8 (`q8_dot_tile`, TRANS): the fp32 epilogue costs 2-4 instructions per (row, column,
# 32-block) whatever the tiling, while each row tile unpacks the weights again, so one row tile
# holds the whole 256-row canvas and a narrow BLOCK_N keeps the accumulators in registers; one
# 32-block per K-step (two double the live dots and spill); two pipeline stages (three spill in
# some variants and count more). Every column tile reads all the rows' activations again (from
# L2): 256 x 1.25 B / BLOCK_N per weight element, 10 B at BLOCK_N 32, against 4 B for the bf16
# path's four 64 x 128 tiles. sm_89 SASS of the K-loop, thread instructions per weight element
# for all 256 rows (`scripts/bench.py compile --sass`; bf16 path: 4 or 8 row tiles), no spills:
#   32 columns, 4 warps: Q4_K 60.5 (bf16 139), Q5_0 54.1 (166), Q8_0 35.9 (119); at 64 columns
#   and 8 warps, half the L2 reads and half the programs: 69.0, 62.3, 37.4
#   Q6_K, 64 columns, 8 warps: 114 (250), the soft-capped LM head 108; 16 columns and 2 warps
#   count 93 but read 20 B of activations per weight element (15 GB per step for the LM head),
#   32 columns spill
#   linear_glu Q4_K, 16 columns, 4 warps: 64.4 (183); 32 columns, 8 warps: 74.3


def _q8_linear_config(m: int, n: int, qtype: int) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=_pow2(n, 16, 128), BLOCK_K=256)
    if qtype == Q.Q6_K:
        return dict(BLOCK_M=_pow2(m, 16, 256), BLOCK_N=64, BLOCK_K=32, num_warps=8, num_stages=2)
    return dict(BLOCK_M=_pow2(m, 16, 256), BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=2)


def _q8_linear_glu_config(m: int, f: int) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_N=_pow2(f, 16, 128), BLOCK_K=256)
    return dict(BLOCK_M=_pow2(m, 16, 256), BLOCK_N=16, BLOCK_K=32, num_warps=4, num_stages=2)


def _quantize_config(m: int, k: int) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 1, 64), BLOCK_K=_pow2(k, 32, 4096))
    return dict(BLOCK_M=_pow2(m, 1, 16), BLOCK_K=256, num_warps=4)


def _softmax_matmul_config(m: int, v: int) -> dict[str, int]:
    if interpreting():
        # SPLIT 2 keeps the split path covered (V of a few thousand in the tests)
        return dict(BLOCK_M=_pow2(m, 16, 64), BLOCK_V=256, BLOCK_K=256, SPLIT=2)
    # V = 262144 split into 16 chunks of 16,384, times 22 column tiles and 2 row tiles: 704
    # programs, several waves on 128-132 SMs. Each row tile dequantises E and takes exp(logits -
    # lse) again, so few row tiles pay; the settled rows' shortcut skips whole row tiles, so two
    # of 128 rows. Each column tile reads the logits again (from L2): 5.9 GB a step at BLOCK_K
    # 128, twice that at 64. sm_89 SASS of the loop, Q6_K, thread instructions per element of E
    # for all 256 rows (`scripts/bench.py compile --sass`), no spills: 145.1 here; 142.9 with
    # BLOCK_K 64 and 4 warps; the first cut (64 rows, BLOCK_K 64): 303; one 256-row tile: 101.6,
    # but it is skipped only when every row is settled; BLOCK_K 256 spills
    return dict(BLOCK_M=_pow2(m, 16, 128), BLOCK_V=32, BLOCK_K=128, SPLIT=max(1, min(16, v // 16384)),
                num_warps=8, num_stages=2)


def _embedding_config(m: int, k: int) -> dict[str, int]:
    if interpreting():
        return dict(BLOCK_M=_pow2(m, 1, 16), BLOCK_K=_pow2(k, 16, 4096))
    return dict(BLOCK_M=_pow2(m, 1, 16), BLOCK_K=256, num_warps=4)


# ---------------------------------------------------------------------------------------------
# Host side


def _check_device(device: torch.device) -> None:
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(reason)


def _check_weight(w: RawWeight, device: torch.device, what: str) -> None:
    if w.data.dim() != 2 or not w.data.is_contiguous():
        raise ValueError(f"{what}: expected contiguous uint8 rows [N, row_bytes], got {tuple(w.data.shape)}")
    if w.data.device != device:
        raise ValueError(f"{what}: weight on {w.data.device}, input on {device}")


def _check_input(x: torch.Tensor | Q8Activations, k: int, *weights: RawWeight) -> None:
    """x: a contiguous float [M, k] input, or one quantised by `quantize_activations` (then every
    weight must be of INT8_TYPES)."""
    _check_device(x.device)
    if isinstance(x, Q8Activations):
        if x.shape[1] != k:
            raise ValueError(f"expected int8 activations of [M, {k}] values, got {x.shape}")
        if any(w.qtype not in INT8_TYPES for w in weights):
            raise ValueError("int8 activations need Q4_K, Q5_0, Q8_0 or Q6_K weights")
        return
    if x.dim() != 2 or x.shape[1] != k or x.dtype not in ACTIVATION_DTYPES or not x.is_contiguous():
        raise ValueError(f"expected contiguous float32/float16/bfloat16 [M, {k}], "
                         f"got {x.dtype} {tuple(x.shape)}")


def _planes(x: torch.Tensor | Q8Activations) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The kernels' (x_ptr, da_ptr, sa_ptr) arguments for x."""
    return (x.qa, x.da, x.sa) if isinstance(x, Q8Activations) else (x, None, None)


def quantize_activations(x: torch.Tensor) -> Q8Activations:
    """x [M, K] (float32/float16/bfloat16, contiguous, K a multiple of 32) quantised per 32 values
    to int8 as llama.cpp's q8_1 does (gpu-engine.md §6.2; `gguf_tiles.quantize_q8`: d = amax/127,
    codes round(x·(1/d)) with ties away from zero, in fp32), in one launch. Every W4A8 `linear` /
    `linear_glu` that reads the same input takes the result."""
    if x.dim() != 2 or x.shape[1] % 32:
        raise ValueError(f"int8 activations need [M, K] with K a multiple of 32, got {tuple(x.shape)}")
    _check_input(x, x.shape[1])
    m, k = x.shape
    qa = torch.empty(m, k, dtype=torch.int8, device=x.device)
    da, sa = (torch.empty(k // 32, m, dtype=torch.float32, device=x.device) for _ in range(2))
    meta = _quantize_config(m, k)
    grid = (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_K"]))
    launch(_quantize_q8_kernel, grid, x, qa, da, sa, m, k, **meta)
    return Q8Activations(qa, da, sa, x.dtype)


def linear(x: torch.Tensor | Q8Activations, w: RawWeight, *, softcap: float = 0.0,
           out_dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ Wᵀ, reading W's GGUF blocks as stored (one launch).

    x: [M, K] float32/float16/bfloat16, contiguous; or `quantize_activations(x)` (W4A8, W of
    INT8_TYPES): its int8 codes meet W's in exact int32 dots per 32-block with an fp32 epilogue,
    which adds the activation quantisation error (~1e-2 relative, see tests). w: [N, K] raw
    blocks. Returns [M, N] in `out_dtype` (default x.dtype), or into `out` (contiguous [M, N]).
    Accumulates in fp32; with `softcap` c > 0 the epilogue returns c·tanh(y/c), in fp32 before
    the final rounding (Gemma's final logit soft-capping).
    """
    _check_input(x, w.cols, w)
    _check_weight(w, x.device, "linear")
    m, n = x.shape[0], w.rows
    y = torch.empty(m, n, dtype=out_dtype or x.dtype, device=x.device) if out is None else out
    if y.shape != (m, n) or not y.is_contiguous():
        raise ValueError(f"out: expected a contiguous [{m}, {n}] tensor, got {tuple(y.shape)}")
    int8 = isinstance(x, Q8Activations)
    meta = _q8_linear_config(m, n, w.qtype) if int8 else _linear_config(m, n, w.qtype)
    grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    launch(_linear_kernel, grid, *_planes(x), w.data, y, m, n, w.cols, w.row_bytes, float(softcap),
           QTYPE=w.qtype, SOFTCAP=softcap > 0, UPCAST=interpreting(), INT8=int8, **meta)
    return y


def linear_glu(x: torch.Tensor | Q8Activations, gate: RawWeight, up: RawWeight) -> torch.Tensor:
    """gelu_tanh(x @ gateᵀ) * (x @ upᵀ) in one launch with two accumulators (GeGLU MLP).

    x: [M, K] float32/float16/bfloat16, contiguous, or `quantize_activations(x)` (W4A8 as in
    `linear`, gate and up of INT8_TYPES). gate, up: [F, K] raw blocks, of any kernel types (they
    may differ). Returns [M, F] in x.dtype. The GELU is torch's F.gelu(approximate="tanh"),
    evaluated in fp32 on the fp32 accumulators.
    """
    _check_input(x, gate.cols, gate, up)
    _check_weight(gate, x.device, "linear_glu gate")
    _check_weight(up, x.device, "linear_glu up")
    if up.rows != gate.rows or up.cols != gate.cols:
        raise ValueError(f"gate is [{gate.rows}, {gate.cols}] but up is [{up.rows}, {up.cols}]")
    m, f = x.shape[0], gate.rows
    y = torch.empty(m, f, dtype=x.dtype, device=x.device)
    int8 = isinstance(x, Q8Activations)
    meta = _q8_linear_glu_config(m, f) if int8 else _linear_glu_config(m, f, gate.qtype, up.qtype, x.dtype)
    grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(f, meta["BLOCK_N"]),)
    launch(_linear_glu_kernel, grid, *_planes(x), gate.data, up.data, y, m, f, gate.cols, gate.row_bytes,
           up.row_bytes, GATE_QTYPE=gate.qtype, UP_QTYPE=up.qtype, UPCAST=interpreting(), INT8=int8, **meta)
    return y


@dataclass(frozen=True)
class SettledRows:
    """Self-conditioning's shortcut for the canvas positions a step has settled (gpu-engine.md
    §6.6, top-K with the tail-mean term). Of a row's `candidates`, those with p ≥ `tail` / K form S;
    a row where S holds p_S ≥ 1 - `tail` of the softmax gets Σ_S p_v·E[v] + (1 - p_S)·Ē instead of
    the dense sum over the vocabulary. Its error is at most tail·max‖E[v] - Ē‖ (the error is
    Σ_{v∉S} p_v·(E[v] - Ē)): with `tail` the largest error of rounding a probability near 1 to
    the compute dtype, of the size of what the dense product's own rounding changes. The dense
    kernel then takes only the other rows and skips the row tiles that none of them reaches."""

    candidates: torch.Tensor
    """int64 [M, K]: each row's candidates, distinct within the row, each in [0, V] (V: none); the
    fused sampler's (`RowStatistics.candidates`: the two largest of each tile). Not checked:
    that would need a host sync."""
    mean: torch.Tensor
    """float32 [K]: Ē, the mean row of E (`mean_row`)."""
    tail: float
    """The largest mass outside S that a settled row may have, in (0, 1)."""


def softmax_matmul(logits: torch.Tensor, lse: torch.Tensor, w: RawWeight, *,
                   operand_dtype: torch.dtype = torch.float32, settled: SettledRows | None = None) -> torch.Tensor:
    """Dense self-conditioning: soft[m, :] = Σ_v exp(logits[m, v] - lse[m]) · E[v, :].

    logits: float32 [M, V], contiguous; lse: float32 [M], their log-sum-exp per row (so the
    weights are the softmax). w: E, [V, K] raw blocks (the embedding: one row per vocabulary
    entry, quantised along K); the contraction runs over its rows. Returns float32 [M, K].

    The V reduction is split into contiguous chunks (16 on a GPU at V = 262144), one program per
    (column tile, chunk, row tile), so that a GPU has enough programs for K = 2816; each chunk
    writes its own fp32 partial [M, K] and one torch sum adds them (no atomics, deterministic).
    That is one Triton launch plus that sum (none with a single chunk).

    `operand_dtype` float16/bfloat16 rounds the probabilities and E to that type before the
    products (tensor cores on a GPU); the default float32 keeps IEEE fp32 products.

    `settled` (M <= 1024) gives the settled rows the `SettledRows` shortcut: a launch before the
    dense one finds them, and one after it adds the chunks and writes every row, in place of the
    torch sum.
    """
    _check_device(logits.device)
    _check_weight(w, logits.device, "softmax_matmul")
    m, v = logits.shape
    if logits.dtype != torch.float32 or not logits.is_contiguous() or v != w.rows:
        raise ValueError(f"expected contiguous float32 logits [M, {w.rows}], "
                         f"got {logits.dtype} {tuple(logits.shape)}")
    if lse.dtype != torch.float32 or lse.shape != (m,) or not lse.is_contiguous():
        raise ValueError(f"expected contiguous float32 lse [{m}], got {lse.dtype} {tuple(lse.shape)}")
    if operand_dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"operand_dtype must be float32, float16 or bfloat16, not {operand_dtype}")
    k = w.cols
    if settled is not None:
        _check_settled(settled, m, k, logits.device)
    meta = _softmax_matmul_config(m, v)
    split = meta.pop("SPLIT")
    v_per_split = triton.cdiv(triton.cdiv(v, split), meta["BLOCK_V"]) * meta["BLOCK_V"]
    partial = torch.empty(split, m, k, dtype=torch.float32, device=logits.device)
    grid = (triton.cdiv(k, meta["BLOCK_K"]), split, triton.cdiv(m, meta["BLOCK_M"]))
    flags = weights = None
    if settled is not None:
        n_cand = settled.candidates.shape[1]
        flags = torch.empty(m, dtype=torch.int32, device=logits.device)
        weights = torch.empty(m, n_cand, dtype=torch.float32, device=logits.device)
        block_c = triton.next_power_of_2(n_cand)
        block_m = max(1, min(triton.next_power_of_2(m), 4096 // block_c))
        launch(_settled_weights_kernel, (triton.cdiv(m, block_m),), logits, lse, settled.candidates, weights, flags,
               math.log(settled.tail / n_cand), 1.0 - settled.tail, m, v, n_cand, BLOCK_M=block_m, BLOCK_C=block_c)
    launch(_softmax_matmul_kernel, grid, logits, lse, w.data, partial, flags, m, v, k, w.row_bytes,
           v_per_split, QTYPE=w.qtype, OPERAND=_TL_DTYPES[operand_dtype], UPCAST=interpreting(),
           SKIP_SETTLED=settled is not None, M_ALL=1 if settled is None else triton.next_power_of_2(m), **meta)
    if settled is None:
        return partial[0] if split == 1 else partial.sum(0)
    soft = torch.empty(m, k, dtype=torch.float32, device=logits.device)
    meta = _embedding_config(m, k)
    combine_grid = (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_K"]))
    launch(_settled_combine_kernel, combine_grid, partial, settled.candidates, weights, flags, w.data, settled.mean,
           soft, m, v, k, w.row_bytes, settled.candidates.shape[1], SPLIT=split, QTYPE=w.qtype, **meta)
    return soft


def _check_settled(settled: SettledRows, m: int, k: int, device: torch.device) -> None:
    if not 0 < settled.tail < 1:
        raise ValueError(f"settled tail must lie in (0, 1), not {settled.tail}")
    if m > 1024:
        raise ValueError(f"settled rows are for a canvas of at most 1024 rows, not {m}")
    candidates, mean = settled.candidates, settled.mean
    if (candidates.dtype != torch.int64 or candidates.dim() != 2 or candidates.shape[0] != m
            or not 1 <= candidates.shape[1] <= 4096 or not candidates.is_contiguous() or candidates.device != device):
        raise ValueError(f"expected contiguous int64 candidates [{m}, 1 to 4096] on {device}, "
                         f"got {candidates.dtype} {tuple(candidates.shape)} on {candidates.device}")
    if mean.dtype != torch.float32 or mean.shape != (k,) or not mean.is_contiguous() or mean.device != device:
        raise ValueError(f"expected contiguous float32 mean [{k}] on {device}, "
                         f"got {mean.dtype} {tuple(mean.shape)} on {mean.device}")


def mean_row(w: RawWeight) -> torch.Tensor:
    """Ē: the mean of W's rows, float32 [K] (one `softmax_matmul` with uniform weights, fp32 products)."""
    uniform = torch.zeros(1, w.rows, dtype=torch.float32, device=w.data.device)
    return softmax_matmul(uniform, torch.full((1,), math.log(w.rows), device=w.data.device), w)[0]


def embedding(ids: torch.Tensor, w: RawWeight, scale: float | torch.Tensor,
              dtype: torch.dtype) -> torch.Tensor:
    """Rows `ids` of W dequantised, times `scale`: [M, K] in `dtype` (one launch).

    ids: int64 [M], each in [0, V) (not checked: that would need a host sync). w: [V, K] raw
    blocks. scale: a Python float or a one-element tensor on the device (read by the kernel, so
    it may change between CUDA-graph replays). The product is taken in fp32 and rounded once to
    `dtype`.
    """
    _check_device(ids.device)
    _check_weight(w, ids.device, "embedding")
    if ids.dtype != torch.int64 or ids.dim() != 1 or not ids.is_contiguous():
        raise ValueError(f"expected contiguous int64 ids [M], got {ids.dtype} {tuple(ids.shape)}")
    scale_ptr, scale_value = (scale, 1.0) if isinstance(scale, torch.Tensor) else (None, float(scale))
    if scale_ptr is not None and (scale_ptr.numel() != 1 or scale_ptr.device != ids.device):
        raise ValueError(f"scale: expected one element on {ids.device}, "
                         f"got {tuple(scale_ptr.shape)} on {scale_ptr.device}")
    m, k = ids.shape[0], w.cols
    y = torch.empty(m, k, dtype=dtype, device=ids.device)
    meta = _embedding_config(m, k)
    grid = (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(k, meta["BLOCK_K"]))
    launch(_embedding_kernel, grid, ids, w.data, y, scale_ptr, scale_value, m, w.rows, k,
           w.row_bytes, QTYPE=w.qtype, **meta)
    return y


__all__ = ["ACTIVATION_DTYPES", "Q8Activations", "SettledRows", "embedding", "linear", "linear_glu", "mean_row",
           "quantize_activations", "softmax_matmul"]
