"""Dequantisation of GGUF weights inside Triton kernels, one [BLOCK_K, BLOCK_N] tile at a time.

A weight matrix is the tensor's raw bytes, row-major: row n (an output feature) holds K values
in `row_bytes` bytes of blocks (gpu-engine.md §5.1-5.4; ggml-common.h). `dequant_tile` returns
W[rows, cols]ᵀ in float32, exactly the float32 values of `dg_chat.gguf.dequant` (the same
products in the same order), for any rows and any columns: every element finds its own bytes,
so a tile may start anywhere inside a block and tails are masked.

The type ids are ggml's (`GGMLQuantizationType`), passed as a `tl.constexpr`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton

# constexpr: a compiled kernel may read only constexpr globals (the interpreter reads any)
F32, F16, BF16 = tl.constexpr(int(Q.F32)), tl.constexpr(int(Q.F16)), tl.constexpr(int(Q.BF16))
Q5_0, Q8_0, Q4_K, Q6_K = tl.constexpr(int(Q.Q5_0)), tl.constexpr(int(Q.Q8_0)), tl.constexpr(int(Q.Q4_K)), tl.constexpr(int(Q.Q6_K))
KERNEL_TYPES = frozenset({Q.F32, Q.F16, Q.BF16, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q6_K})
"""The types the kernels read (the published DiffusionGemma quants use only these)."""


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
            raise ValueError(f"{tuple(self.data.shape)} {self.data.dtype} is not rows of {self.cols} {Q(self.qtype).name} values")

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
        j = t // 32
        s0 = _u8(row, base + 4 + j, mask)
        s1 = _u8(row, base + 8 + j, mask)  # byte j + 4
        s2 = _u8(row, base + tl.where(j >= 4, j, j + 4), mask)  # byte j - 4 (j >= 4 only)
        sc = tl.where(j < 4, s0 & 63, (s1 & 15) | ((s2 >> 6) << 4))
        mn = tl.where(j < 4, s1 & 63, (s1 >> 4) | ((s0 >> 6) << 4))
        byte = _u8(row, base + 16 + (t // 64) * 32 + t % 32, mask)
        q = tl.where((t % 64) < 32, byte & 15, byte >> 4)
        scale = _f16(row, base, mask) * sc.to(tl.float32)
        offset = _f16(row, base + 2, mask) * mn.to(tl.float32)
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
