"""GGUF weights read inside Triton kernels, one tile at a time, in two ways.

A weight matrix is the tensor's raw bytes, row-major: row n (an output feature) holds K values
in `row_bytes` bytes of blocks (gpu-engine.md §5.1-5.4; ggml-common.h).

- `dequant_tile` returns W[rows, cols]ᵀ in float32, exactly the float32 values of
  `dg_chat.gguf.dequant` (the same products in the same order), for any rows and any columns:
  every element finds its own bytes, so a tile may start anywhere inside a block and tails are
  masked. It costs a handful of loads and ~20 integer/float ops per element.
- `dot_tile` is the K-step of the matmuls: for the quantised types it scales after the dot. The
  raw integer codes of each scale group (`SCALE_GROUP`: 32 values, 16 for Q6_K) meet the
  activations in one dot (codes are exact in fp16/bf16/fp32), and the group's scale (and Q4_K's
  offset) is applied once per (group, output row) to the [BLOCK_M, BLOCK_N] partial.
- `q8_dot_tile` is the W4A8 K-step (gpu-engine.md §6.2): activations quantised per 32 values to
  int8 (`quantize_q8`, llama.cpp's q8_1 rounding) meet the codes in exact int32 dots, scaled in
  an fp32 epilogue; `int8_dot_tile` quantises its float tile first (the MoE kernels).
  `accumulate` picks `dot_tile` or `int8_dot_tile`.

The type ids are ggml's (`GGMLQuantizationType`), passed as a `tl.constexpr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton
from dg_chat.engine.backends.torch_dg.kernels.tl_math import mma

# constexpr: a compiled kernel may read only constexpr globals (the interpreter reads any)
F32, F16, BF16 = tl.constexpr(int(Q.F32)), tl.constexpr(int(Q.F16)), tl.constexpr(int(Q.BF16))
Q5_0, Q8_0 = tl.constexpr(int(Q.Q5_0)), tl.constexpr(int(Q.Q8_0))
Q4_K, Q6_K = tl.constexpr(int(Q.Q4_K)), tl.constexpr(int(Q.Q6_K))
KERNEL_TYPES = frozenset({Q.F32, Q.F16, Q.BF16, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K})
"""The types the kernels read (the published DiffusionGemma quants use only these)."""
SCALE_GROUP: dict[int, int] = {Q.Q4_K: 32, Q.Q5_0: 32, Q.Q8_0: 32, Q.Q6_K: 16}
"""Values that share one scale, per quantised type: `dot_tile`'s K-blocks."""
INT8_TYPES = frozenset({Q.Q4_K, Q.Q5_0, Q.Q8_0, Q.Q6_K})
"""Weight types the W4A8 K-steps read. Int8 tensor-core dots take K = 32, one activation block:
Q6_K's two 16-value groups per block take two dots, each with the other group's codes zeroed."""


@dataclass(frozen=True)
class RawWeight:
    """A GGUF weight as stored: `data` is uint8 [rows, row_bytes] (a matrix: row n is output
    feature n) or [experts, rows, row_bytes] (an expert tensor), on the kernels' device."""

    data: torch.Tensor
    qtype: int
    """ggml type id (GGMLQuantizationType), one of KERNEL_TYPES."""
    cols: int
    """K: values per row."""

    def __post_init__(self) -> None:
        block, type_size = GGML_QUANT_SIZES[Q(self.qtype)]
        if Q(self.qtype) not in KERNEL_TYPES:
            raise ValueError(f"no Triton kernel reads GGUF type {Q(self.qtype).name}")
        if self.data.dtype != torch.uint8 or self.cols % block or self.data.shape[-1] != self.cols // block * type_size:
            raise ValueError(f"{tuple(self.data.shape)} {self.data.dtype} is not rows of {self.cols} "
                             f"{Q(self.qtype).name} values")

    @property
    def rows(self) -> int:
        """N: rows per matrix (per expert for an expert tensor)."""
        return self.data.shape[-2]

    @property
    def row_bytes(self) -> int:
        return self.data.shape[-1]


@triton.jit
def _u8(ptr, offset, mask):
    return tl.load(ptr + offset, mask=mask, other=0).to(tl.int32)


@triton.jit
def _i8(ptr, offset, mask):
    byte = _u8(ptr, offset, mask)
    return byte - ((byte >> 7) << 8)


@triton.jit
def _f16(ptr, offset, mask):
    """The fp16 at byte `offset`, as fp32. Every fp16 field of the kernels' types sits at an even
    offset of a block of even size (§5.5: 2-byte aligned), so one typed load reads it."""
    return tl.load((ptr + offset).to(tl.pointer_type(tl.float16)), mask=mask, other=0).to(tl.float32)


@triton.jit
def _q4_k_scale_offset(row, base, j, mask):
    """Q4_K sub-block j's (d·sc_j, dmin·m_j) in fp32 from the super-block at byte `base` (§5.2)."""
    s0 = _u8(row, base + 4 + j, mask)
    s1 = _u8(row, base + 8 + j, mask)  # byte j + 4
    s2 = _u8(row, base + tl.where(j >= 4, j, j + 4), mask)  # byte j - 4 (j >= 4 only)
    sc = tl.where(j < 4, s0 & 63, (s1 & 15) | ((s2 >> 6) << 4))
    mn = tl.where(j < 4, s1 & 63, (s1 >> 4) | ((s0 >> 6) << 4))
    return _f16(row, base, mask) * sc.to(tl.float32), _f16(row, base + 2, mask) * mn.to(tl.float32)


@triton.jit
def _q4_k_header_scale_offset(row, base, j, mask):
    """`_q4_k_scale_offset` of a [NB, BLOCK_N] tile from one 16-byte load per element: the
    super-block's header (d and dmin; scale bytes 0-3, 4-7, 8-11) as four uint32 words. Rows
    start 16-byte aligned: GGUF aligns tensors to 32 bytes, a Q4_K row is whole 144-byte blocks."""
    words = tl.load((row + base).to(tl.pointer_type(tl.uint32))[:, :, None] + tl.arange(0, 4)[None, None, :],
                    mask=mask[:, :, None], other=0)
    even, odd = tl.split(tl.reshape(words, [words.shape[0], words.shape[1], 2, 2]))
    head, middle = tl.split(even)
    low, high = tl.split(odd)
    shift = (j % 4) * 8
    a = (low >> shift) & 255  # scale byte j % 4
    b = (middle >> shift) & 255  # j % 4 + 4
    c = (high >> shift) & 255  # j % 4 + 8
    sc = tl.where(j < 4, a & 63, (c & 15) | ((a >> 6) << 4))
    mn = tl.where(j < 4, b & 63, (c >> 4) | ((b >> 6) << 4))
    d = (head & 65535).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    dmin = (head >> 16).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    return d * sc.to(tl.float32), dmin * mn.to(tl.float32)


@triton.jit
def dequant_tile(w_ptr, row_bytes, rows, cols, n_rows, n_cols, QTYPE: tl.constexpr):
    """float32 [len(cols), len(rows)]: W[rows, cols] transposed (ready for `tl.dot(x, w)`);
    0 outside [0, n_rows) x [0, n_cols)."""
    r = rows[None, :].to(tl.int64)
    c = cols[:, None]
    mask = (r < n_rows) & (c < n_cols)
    row = w_ptr + r * row_bytes
    if QTYPE == F32:  # rows start 4-byte aligned (GGUF aligns tensors to 32 bytes)
        w = tl.load((row + c * 4).to(tl.pointer_type(tl.float32)), mask=mask, other=0)
    elif QTYPE == F16:
        w = _f16(row, c * 2, mask)
    elif QTYPE == BF16:
        bits = tl.load((row + c * 2).to(tl.pointer_type(tl.uint16)), mask=mask, other=0).to(tl.int32)
        w = (bits << 16).to(tl.float32, bitcast=True)
    elif QTYPE == Q8_0:  # d: f16, qs: int8[32]
        base = (c // 32) * 34
        q = _i8(row, base + 2 + c % 32, mask)
        w = q.to(tl.float32) * _f16(row, base, mask)
    elif QTYPE == Q5_0:  # d: f16, qh: u32 of 5th bits, qs[16]: element j low nibble, j+16 high
        j = c % 32
        base = (c // 32) * 22
        byte = _u8(row, base + 6 + j % 16, mask)
        nibble = tl.where(j < 16, byte & 15, byte >> 4)
        high = (_u8(row, base + 2 + j // 8, mask) >> (j % 8)) & 1
        w = ((nibble | (high << 4)) - 16).to(tl.float32) * _f16(row, base, mask)
    elif QTYPE == Q4_K:  # d, dmin: f16, scales[12] (8 six-bit scales and mins), qs[128]
        t = c % 256
        base = (c // 256) * 144
        scale, offset = _q4_k_scale_offset(row, base, t // 32, mask)
        byte = _u8(row, base + 16 + (t // 64) * 32 + t % 32, mask)
        q = tl.where((t % 64) < 32, byte & 15, byte >> 4)
        w = q.to(tl.float32) * scale - offset
    elif QTYPE == Q6_K:  # ql[128], qh[64], scales: int8[16], d: f16
        t = c % 256
        base = (c // 256) * 210
        half = t // 128
        quarter = (t % 128) // 32
        lane = t % 32
        low = _u8(row, base + 64 * half + 32 * (quarter % 2) + lane, mask)
        low = tl.where(quarter < 2, low & 15, low >> 4)
        high = (_u8(row, base + 128 + 32 * half + lane, mask) >> (2 * quarter)) & 3
        sc = _i8(row, base + 192 + t // 16, mask)
        scale = _f16(row, base + 208, mask) * sc.to(tl.float32)
        w = ((low | (high << 4)) - 32).to(tl.float32) * scale
    else:
        tl.static_assert(False, "unsupported GGUF type")
    return tl.where(mask, w, 0.0)


@triton.jit
def code_tile(w_ptr, row_bytes, rows, first, n_rows, n_groups, QTYPE: tl.constexpr, NB: tl.constexpr,
              G: tl.constexpr):
    """int8 [NB, G, len(rows)]: the integer codes of the G-value scale groups first .. first+NB-1
    of W[rows]; element [b, g, n] is the code of W[rows[n], (first + b)·G + g] (Q4_K: q in 0..15,
    Q5_0: q - 16, Q8_0: q, Q6_K: q - 32), 0 outside [0, n_rows) x [0, n_groups). Consecutive g
    read consecutive bytes of a row (Q5_0's 5th bits: one byte per 8 values), so loads coalesce."""
    b = first + tl.arange(0, NB)[:, None, None]
    g = tl.arange(0, G)[None, :, None]
    r = rows[None, None, :].to(tl.int64)
    mask = (r < n_rows) & (b < n_groups)
    row = w_ptr + r * row_bytes
    if QTYPE == Q8_0:  # d: f16, qs: int8[32]
        code = tl.load((row + b * 34 + 2 + g).to(tl.pointer_type(tl.int8)), mask=mask, other=0)
    elif QTYPE == Q5_0:  # d: f16, qh: u32 of 5th bits, qs[16]: value g low nibble, g + 16 high
        base = b * 22
        byte = _u8(row, base + 6 + g % 16, mask)
        high = (_u8(row, base + 2 + g // 8, mask) >> (g % 8)) & 1
        code = (tl.where(g < 16, byte & 15, byte >> 4) | (high << 4)) - 16
    elif QTYPE == Q4_K:  # sub-blocks 2c, 2c+1: low, high nibbles of qs[32c : 32c+32] (§5.2)
        j = b % 8
        byte = _u8(row, (b // 8) * 144 + 16 + (j // 2) * 32 + g, mask)
        code = tl.where(j % 2 == 0, byte & 15, byte >> 4)
    elif QTYPE == Q6_K:  # group s holds values G·s .. G·s+G-1 of the super-block (§5.4)
        PER_LANE: tl.constexpr = 32 // G  # groups per 32-byte lane run
        s = b % (256 // G)
        base = (b // (256 // G)) * 210
        half = s // (128 // G)
        quarter = (s % (128 // G)) // PER_LANE
        lane = (s % PER_LANE) * G + g
        low = _u8(row, base + half * 64 + (quarter % 2) * 32 + lane, mask)
        high = (_u8(row, base + 128 + half * 32 + lane, mask) >> (2 * quarter)) & 3
        code = (tl.where(quarter < 2, low & 15, low >> 4) | (high << 4)) - 32
    else:
        tl.static_assert(False, "no integer codes for this GGUF type")
    return tl.where(mask, code, 0).to(tl.int8)


@triton.jit
def block_scales(w_ptr, row_bytes, rows, first, n_rows, n_groups, QTYPE: tl.constexpr, NB: tl.constexpr,
                 WORDS: tl.constexpr):
    """fp32 scale and offset [NB, len(rows)] of the scale groups first .. first+NB-1 of W[rows],
    exact (§5.2): value = scale·code - offset with Q4_K d·sc_j and dmin·m_j, Q6_K d·sc, Q5_0 and
    Q8_0 d and 0; both 0 outside [0, n_rows) x [0, n_groups). WORDS reads Q4_K's from one 16-byte
    load per element instead of five small ones: fewer instructions where each thread decodes its
    own rows' scales (the W4A8 K-step), more in the bf16 one's GeGLU (sm_89 SASS)."""
    b = first + tl.arange(0, NB)[:, None]
    r = rows[None, :].to(tl.int64)
    mask = (r < n_rows) & (b < n_groups)
    row = w_ptr + r * row_bytes
    if QTYPE == Q8_0:
        scale = _f16(row, b * 34, mask)
        offset = tl.zeros_like(scale)
    elif QTYPE == Q5_0:
        scale = _f16(row, b * 22, mask)
        offset = tl.zeros_like(scale)
    elif QTYPE == Q4_K:
        if WORDS:
            scale, offset = _q4_k_header_scale_offset(row, (b // 8) * 144, b % 8, mask)
        else:
            scale, offset = _q4_k_scale_offset(row, (b // 8) * 144, b % 8, mask)
    elif QTYPE == Q6_K:
        base = (b // 16) * 210
        scale = _f16(row, base + 208, mask) * _i8(row, base + 192 + b % 16, mask).to(tl.float32)
        offset = tl.zeros_like(scale)
    else:
        tl.static_assert(False, "no block scales for this GGUF type")
    return scale, offset


@triton.jit
def block_dots(a, codes, UPCAST: tl.constexpr):
    """[NB, BLOCK_M, BLOCK_N]: a[:, b·G : (b+1)·G] @ codes[b] for each group b, for a
    [BLOCK_M, NB·G] and codes int8 [NB, G, BLOCK_N]. int8 `a` gives exact int32 dots; float `a`
    fp32-accumulated dots with the codes cast to a's dtype (exact in fp16/bf16/fp32). A single
    group takes a 2-D dot: Triton lowers 3-D dots to mma v2 only (no wgmma on sm_90)."""
    BLOCK_M: tl.constexpr = a.shape[0]
    NB: tl.constexpr = codes.shape[0]
    G: tl.constexpr = codes.shape[1]
    BLOCK_N: tl.constexpr = codes.shape[2]
    if UPCAST:  # the interpreter: its int -> bf16 cast is broken too (NaNs), and `mma` upcasts
        codes = codes.to(tl.float32)
    elif a.dtype != tl.int8:
        codes = codes.to(a.dtype)
    if NB == 1:
        a = tl.reshape(a, [BLOCK_M, G])
        codes = tl.reshape(codes, [G, BLOCK_N])
    else:
        a = tl.permute(tl.reshape(a, [BLOCK_M, NB, G]), (1, 0, 2))
    if a.dtype == tl.int8:
        dots = tl.dot(a, codes)
    else:
        dots = mma(None, a, codes, UPCAST)
    return tl.reshape(dots, [NB, BLOCK_M, BLOCK_N])


MAGIC_BITS = tl.constexpr(0x4B400000)
"""The bits of fp32 1.5·2^23, whose ulp is 1: an integer i with |i| < 2^22 added to them gives
the bits of 1.5·2^23 + i, so an int32 dot accumulated from them is its own fp32 conversion."""
MAGIC = tl.constexpr(12582912.0)


@triton.jit
def _int8_dots(qa, codes, TRANS: tl.constexpr):
    """fp32 MAGIC + the exact int32 dot qa[:, 32b : 32b+32] @ codes[b] of each 32-block b, for qa
    int8 [BLOCK_M, NB·32] and codes int8 [NB, 32, BLOCK_N]: [NB, BLOCK_M, BLOCK_N], or with TRANS
    [NB, BLOCK_N, BLOCK_M] (codes[b]ᵀ @ qa[:, b]ᵀ). |dot| ≤ 32·128·127 < 2^22, so the tensor cores
    add MAGIC_BITS for free in place of an int -> float conversion per dot."""
    BLOCK_M: tl.constexpr = qa.shape[0]
    NB: tl.constexpr = codes.shape[0]
    a = tl.permute(tl.reshape(qa, [BLOCK_M, NB, 32]), (1, 0, 2))  # [NB, BLOCK_M, 32]
    w = codes
    if TRANS:
        a, w = tl.permute(w, (0, 2, 1)), tl.permute(a, (0, 2, 1))
    ROWS: tl.constexpr = a.shape[1]
    COLS: tl.constexpr = w.shape[2]
    if NB == 1:  # a 2-D dot, as in block_dots
        dots = tl.dot(tl.reshape(a, [ROWS, 32]), tl.reshape(w, [32, COLS]),
                      tl.full([ROWS, COLS], MAGIC_BITS, tl.int32))
    else:
        dots = tl.dot(a, w, tl.full([NB, ROWS, COLS], MAGIC_BITS, tl.int32))
    return tl.reshape(dots, [NB, ROWS, COLS]).to(tl.float32, bitcast=True)


@triton.jit
def _scaled(dots, scale, TRANS: tl.constexpr):
    """scale_b[n]·dot exactly rounded, from `_int8_dots`' MAGIC + dot, in one FMA per element:
    scale·MAGIC is exact (scale = fp16 d times an integer of at most 8 bits: <= 19 significant bits,
    MAGIC = 3·2^22), so fma(scale, MAGIC + dot, -scale·MAGIC) rounds scale·dot once."""
    return tl.fma(_per_n(scale, TRANS), dots, -_per_n(scale * MAGIC, TRANS))


@triton.jit
def _per_n(v, TRANS: tl.constexpr):
    """v [NB, BLOCK_N] (one value per weight row n) broadcast against `_int8_dots`' layout."""
    return v[:, :, None] if TRANS else v[:, None, :]


@triton.jit
def _per_m(v, TRANS: tl.constexpr):
    """v [NB, BLOCK_M] (one value per activation row m) broadcast against `_int8_dots`' layout."""
    return v[:, None, :] if TRANS else v[:, :, None]


@triton.jit
def dot_tile(acc, a, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ W[rows, k0 : k0+BLOCK_K]ᵀ: one K-step of a matmul, fp32 [BLOCK_M, len(rows)].

    a: [BLOCK_M, BLOCK_K] fp32/fp16/bf16 activations, 0 past n_cols. For the quantised types
    BLOCK_K and k0 are multiples of the type's SCALE_GROUP G (16 or 32); each G-group's codes
    meet `a` in one dot (`block_dots`) and the group's scale is applied to that partial:
    acc += Σ_b dots_b·scale_b[n] (- Σ_k a[m, k]·offset_b[n] for Q4_K, per group b). Float types
    go through dequant_tile.
    """
    BLOCK_M: tl.constexpr = a.shape[0]
    BLOCK_K: tl.constexpr = a.shape[1]
    if QTYPE == F32 or QTYPE == F16 or QTYPE == BF16:
        w = dequant_tile(w_ptr, row_bytes, rows, k0 + tl.arange(0, BLOCK_K), n_rows, n_cols, QTYPE)
        return mma(acc, a, w.to(a.dtype), UPCAST)
    else:
        G: tl.constexpr = 16 if QTYPE == Q6_K else 32
        NB: tl.constexpr = BLOCK_K // G
        codes = code_tile(w_ptr, row_bytes, rows, k0 // G, n_rows, n_cols // G, QTYPE, NB, G)
        scale, offset = block_scales(w_ptr, row_bytes, rows, k0 // G, n_rows, n_cols // G, QTYPE, NB, False)
        partial = block_dots(a, codes, UPCAST) * scale[:, None, :]
        if QTYPE == Q4_K:
            a_sums = tl.trans(tl.sum(tl.reshape(a.to(tl.float32), [BLOCK_M, NB, G]), axis=2))  # [NB, BLOCK_M]
            partial -= a_sums[:, :, None] * offset[:, None, :]
        return acc + tl.sum(partial, axis=0)


@triton.jit
def quantize_q8(a):
    """a [BLOCK_M, NB·32] (float) per 32 values to int8 as llama.cpp's q8_1 does (d = amax/127,
    round half away from zero): codes int8 [BLOCK_M, NB·32], scales d fp32 [NB, BLOCK_M] and
    the code sums fp32 [NB, BLOCK_M] (for Q4_K's offsets); an all-zero block gets codes 0."""
    BLOCK_M: tl.constexpr = a.shape[0]
    BLOCK_K: tl.constexpr = a.shape[1]
    NB: tl.constexpr = BLOCK_K // 32
    a = tl.reshape(a.to(tl.float32), [BLOCK_M, NB, 32])
    d = tl.max(tl.abs(a), axis=2) / 127.0
    v = a * tl.where(d > 0, 1.0 / tl.where(d > 0, d, 1.0), 0.0)[:, :, None]
    q = tl.where(v < 0, -tl.floor(0.5 - v), tl.floor(v + 0.5))
    return tl.reshape(q.to(tl.int8), [BLOCK_M, BLOCK_K]), tl.trans(d), tl.trans(tl.sum(q, axis=2))


@triton.jit
def q8_dot_tile(acc, qa, da, sa, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE: tl.constexpr,
                TRANS: tl.constexpr):
    """acc + (qa·da) @ W[rows, k0 : k0+BLOCK_K]ᵀ, the W4A8 K-step (gpu-engine.md §6.2, the idea of
    llama.cpp's MMQ): fp32 [BLOCK_M, len(rows)], or its transpose [len(rows), BLOCK_M] with TRANS.

    qa: int8 [BLOCK_M, BLOCK_K] activation codes, 0 past n_cols; da, sa: fp32 [NB, BLOCK_M], the
    scale and code sum of each of its NB 32-blocks (`quantize_q8`). W of INT8_TYPES; BLOCK_K and
    k0 multiples of 32. Each block b meets the weight codes in one exact int32 dot, then the fp32
    epilogue adds da_b[m]·(scale_b[n]·dot_b − offset_b[n]·sa_b[m]); Q6_K takes one dot per
    16-value group (the other group's codes zeroed) and adds da_b·(scale_lo·dot_lo + scale_hi·dot_hi).
    TRANS puts the weight rows on the tensor cores' M side: the layout Triton then picks gives
    each thread fewer weight rows, so fewer per-row scales to load and decode.
    """
    NB: tl.constexpr = qa.shape[1] // 32
    BLOCK_N: tl.constexpr = rows.shape[0]
    codes = code_tile(w_ptr, row_bytes, rows, k0 // 32, n_rows, n_cols // 32, QTYPE, NB, 32)
    if QTYPE == Q6_K:  # scales per 16 values, [2·NB, BLOCK_N]: split into each block's two halves
        scale, _ = block_scales(w_ptr, row_bytes, rows, k0 // 16, n_rows, n_cols // 16, QTYPE, 2 * NB, True)
        low_scale, high_scale = tl.split(tl.permute(tl.reshape(scale, [NB, 2, BLOCK_N]), (0, 2, 1)))
        low = tl.arange(0, 32)[None, :, None] < 16
        # one half at a time: a single tile of dots is live (both at once spill)
        low_dots = _int8_dots(qa, tl.where(low, codes, 0).to(tl.int8), TRANS)
        acc += tl.sum(_per_m(da, TRANS) * _scaled(low_dots, low_scale, TRANS), axis=0)
        partial = _scaled(_int8_dots(qa, tl.where(low, 0, codes).to(tl.int8), TRANS), high_scale, TRANS)
    else:
        scale, offset = block_scales(w_ptr, row_bytes, rows, k0 // 32, n_rows, n_cols // 32, QTYPE, NB, True)
        partial = _scaled(_int8_dots(qa, codes, TRANS), scale, TRANS)
        if QTYPE == Q4_K:
            partial -= _per_n(offset, TRANS) * _per_m(sa, TRANS)
    return acc + tl.sum(_per_m(da, TRANS) * partial, axis=0)


@triton.jit
def int8_dot_tile(acc, a, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE: tl.constexpr):
    """`q8_dot_tile` on a float activation tile a [BLOCK_M, BLOCK_K] (0 past n_cols), quantised
    here: acc + a @ W[rows, k0 : k0+BLOCK_K]ᵀ with a rounded to int8 per 32 values."""
    qa, da, sa = quantize_q8(a)
    return q8_dot_tile(acc, qa, da, sa, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE, False)


@triton.jit
def accumulate(acc, a, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE: tl.constexpr, UPCAST: tl.constexpr,
               INT8: tl.constexpr):
    """One K-step acc + a @ W[rows, k0 : k0+BLOCK_K]ᵀ: `int8_dot_tile` with INT8, else `dot_tile`."""
    if INT8:
        return int8_dot_tile(acc, a, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE)
    else:
        return dot_tile(acc, a, w_ptr, row_bytes, rows, k0, n_rows, n_cols, QTYPE, UPCAST)
