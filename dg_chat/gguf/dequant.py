"""Dequantise GGUF tensors with torch, on whatever device the bytes are (CPU or CUDA).

The PyTorch engine keeps weights quantized in memory and expands them per layer or per
selected expert when it needs them. `gguf.quants` decodes the same formats, but in numpy
(CPU only, and slower); the block layouts below are ggml's (ggml-common.h) and the results
equal `gguf.quants.dequantize` bit for bit: the same float32 operations in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from dg_chat.gguf.reader import GGUFError, GGUFFile

QK_K = 256  # elements in a K-quant super-block

# Unquantized element types: the bytes are simply reinterpreted.
_FLOATS = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The fp16 scale stored at byte `start` of each block, as float32 of shape (n, 1)."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _unpack(x: torch.Tensor, bits: int, to: int = 0) -> torch.Tensor:
    """Bytes (..., L) -> bit fields (..., 8 // bits, L): row i holds field i of every byte,
    lowest bits first (the order in which ggml packs nibbles, crumbs and high bits), moved
    to bit `to` (so that high bits come out ready to be OR-ed onto the low ones)."""
    mask = ((1 << bits) - 1) << to
    fields = []
    for start in range(0, 8, bits):  # one scalar shift per field: faster than a broadcast shift
        moved = x >> (start - to) if start > to else x << (to - start) if start < to else x
        fields.append(moved & mask)
    return torch.stack(fields, dim=-2)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """Q5_0/Q5_1: the little-endian uint32 of 5th bits (n, 4 bytes) -> (n, 32) of 0 or 16."""
    shifts = torch.arange(32, dtype=torch.int32, device=qh.device)
    bits = qh.contiguous().view(torch.int32) >> shifts
    return bits.bitwise_left_shift_(4).bitwise_and_(16).to(torch.uint8)


def _centered(q: torch.Tensor, zero: int) -> torch.Tensor:
    """Fresh unsigned quants (< 128; overwritten) minus their zero point, as float32:
    subtracting in int8 is cheaper than in float32 and just as exact."""
    return q.view(torch.int8).sub_(zero).float()


# The decoders work in place on the tensors they have just made: on the CPU every new large
# tensor costs page faults, which otherwise take more time than the arithmetic.

def _q8_0(b: torch.Tensor) -> torch.Tensor:  # d: f16, qs: int8[32]
    return b[:, 2:].view(torch.int8).float().mul_(_f16(b, 0))


def _q4_0(b: torch.Tensor) -> torch.Tensor:  # d, qs[16]: element j low nibble, j+16 high
    q = _unpack(b[:, 2:], 4).reshape(-1, 32)
    return _centered(q, 8).mul_(_f16(b, 0))


def _q4_1(b: torch.Tensor) -> torch.Tensor:  # d, m, qs[16]
    q = _unpack(b[:, 4:], 4).reshape(-1, 32)
    return q.float().mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q5_0(b: torch.Tensor) -> torch.Tensor:  # d, qh: u32 (5th bits), qs[16]
    q = _unpack(b[:, 6:], 4).reshape(-1, 32).bitwise_or_(_fifth_bits(b[:, 2:6]))
    return _centered(q, 16).mul_(_f16(b, 0))


def _q5_1(b: torch.Tensor) -> torch.Tensor:  # d, m, qh: u32, qs[16]
    q = _unpack(b[:, 8:], 4).reshape(-1, 32).bitwise_or_(_fifth_bits(b[:, 4:8]))
    return q.float().mul_(_f16(b, 0)).add_(_f16(b, 2))


def _k_scales(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: d and dmin times the 8 six-bit scales and 8 six-bit mins packed in bytes
    4..15 -> two float32 (n, 8, 1)."""
    s = b[:, 4:16].reshape(-1, 3, 4)
    lo_sc, lo_mn, hi = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat((lo_sc & 63, (hi & 15) | ((lo_sc >> 2) & 48)), dim=-1)
    mn = torch.cat((lo_mn & 63, (hi >> 4) | ((lo_mn >> 2) & 48)), dim=-1)
    return (_f16(b, 0) * sc.float()).unsqueeze(-1), (_f16(b, 2) * mn.float()).unsqueeze(-1)


def _q4_k(b: torch.Tensor) -> torch.Tensor:  # d, dmin, scales[12], qs[128]
    scale, offset = _k_scales(b)
    q = _unpack(b[:, 16:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    return q.float().mul_(scale).sub_(offset).reshape(-1, QK_K)


def _q5_k(b: torch.Tensor) -> torch.Tensor:  # d, dmin, scales[12], qh[32], qs[128]
    scale, offset = _k_scales(b)
    q = _unpack(b[:, 48:].reshape(-1, 4, 32), 4).reshape(-1, 8, 32)
    q.bitwise_or_(_unpack(b[:, 16:48], 1, to=4))
    return q.float().mul_(scale).sub_(offset).reshape(-1, QK_K)


def _q6_k(b: torch.Tensor) -> torch.Tensor:  # ql[128], qh[64], scales: int8[16], d
    q = _unpack(b[:, :128].reshape(-1, 2, 64), 4).reshape(-1, 8, 32)
    q.bitwise_or_(_unpack(b[:, 128:192].reshape(-1, 2, 32), 2, to=4).reshape(-1, 8, 32))
    scale = (_f16(b, 208) * b[:, 192:208].view(torch.int8).float()).unsqueeze(-1)
    return _centered(q, 32).reshape(-1, 16, 16).mul_(scale).reshape(-1, QK_K)


# Quantized types: a function from blocks (n, type size) uint8 to values (n, block size) float32.
_BLOCK_DECODERS: dict[Q, Callable[[torch.Tensor], torch.Tensor]] = {
    Q.Q8_0: _q8_0, Q.Q4_0: _q4_0, Q.Q4_1: _q4_1, Q.Q5_0: _q5_0, Q.Q5_1: _q5_1,
    Q.Q4_K: _q4_k, Q.Q5_K: _q5_k, Q.Q6_K: _q6_k,
}
SUPPORTED_TYPES = frozenset(_FLOATS) | frozenset(_BLOCK_DECODERS)


def _unsupported(qtype: Q, what: str) -> GGUFError:
    names = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
    return GGUFError(f"{what} has type {qtype.name}, which the PyTorch engine cannot dequantize (supported: {names})")


def dequantize(raw: torch.Tensor, qtype: Q | int, shape: tuple[int, ...] | None = None,
               dtype: torch.dtype = torch.float32, *, name: str = "tensor") -> torch.Tensor:
    """Values of the GGUF rows `raw` (uint8, [..., bytes per row]) on raw's device.

    The result has shape `(*raw.shape[:-1], elements per row)`, or `shape` (numpy order) when
    given. Any leading dimensions work, so `raw[expert_ids]` expands only those experts. For
    F32/F16/BF16 to their own dtype the result may share memory with `raw`. `name` is used in
    the error for an unsupported type.
    """
    qtype = Q(qtype)
    if raw.dtype != torch.uint8 or raw.dim() == 0:
        raise ValueError(f"{name}: expected uint8 rows of bytes, got {raw.dtype} of shape {tuple(raw.shape)}")
    block, type_size = GGML_QUANT_SIZES[qtype]
    if raw.shape[-1] % type_size:
        raise ValueError(f"{name}: rows of {raw.shape[-1]} bytes are not whole {qtype.name} blocks "
                         f"of {type_size} bytes")
    row_shape = (*raw.shape[:-1], raw.shape[-1] // type_size * block)
    if shape is not None and prod(shape) != prod(row_shape):
        raise ValueError(f"{name}: shape {tuple(shape)} does not hold the {prod(row_shape)} values of the bytes")

    raw = raw.contiguous()
    if qtype in _FLOATS:
        values = raw.view(_FLOATS[qtype])
    elif qtype in _BLOCK_DECODERS:
        values = _BLOCK_DECODERS[qtype](raw.reshape(-1, type_size))
    else:
        raise _unsupported(qtype, name)
    return values.reshape(row_shape if shape is None else tuple(shape)).to(dtype)


def tensor_bytes(gguf: GGUFFile, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """The tensor's bytes as uint8 rows ([..., bytes per row]). On the CPU (device None or
    cpu) this is a zero-copy view of the memory map; otherwise a copy on that device."""
    info = gguf.info(name)
    rows = torch.from_numpy(gguf.raw(name)).reshape(info.byte_shape)
    return rows if device is None else rows.to(device)


def load_tensor(gguf: GGUFFile, name: str, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The whole tensor dequantized on `device`, shaped as in the file (numpy order)."""
    info = gguf.info(name)
    return dequantize(tensor_bytes(gguf, name, device), info.type, info.shape, dtype,
                      name=f"{gguf.path}: tensor '{name}'")


def check_supported(gguf: GGUFFile, names: list[str] | None = None) -> None:
    """Raise GGUFError naming the first tensor (of `names`, default all) we cannot dequantize;
    the engine calls this when it loads a model rather than failing mid-answer."""
    for name in gguf.tensors if names is None else names:
        info = gguf.info(name)
        if info.type not in SUPPORTED_TYPES:
            raise _unsupported(info.type, f"{gguf.path}: tensor '{name}'")
