#!/usr/bin/env python3
"""DiffusionGemma GGUFs with the tensor types of the published Q4_K_M, for tests and benchmarks
of the fast path without downloading 16.8 GB.

    scripts/q4_k_m_layout.py SRC.gguf OUT.gguf [--seed N]

Types follow llama.cpp's Q4_K_M rules (src/llama-quant.cpp; gpu-engine.md §5.7): Q6_K for the
tied embedding and for the attn_v of the "more bits" sliding layers, Q8_0 for ffn_down and
ffn_down_exps of the "more bits" layers and Q5_0 for the others (and self_cond_down), Q4_K for
the remaining matrices, F32 for vectors and the router; a K-quant whose rows are not whole
256-value super-blocks falls back as llama.cpp does (Q4_K -> Q5_0, Q6_K -> Q8_0). Weights are
random valid blocks with the spread of the source tensor (the kernels and the reference path
must agree on any valid blocks); vectors and F32 matrices keep their values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dg_chat.gguf.dequant import load_tensor
from dg_chat.gguf.reader import open_gguf

# Standard deviation of the values of random blocks whose fp16 scale d is 1, per type: the
# arithmetic of each format over uniformly random quants and 6-bit/8-bit scales (Q4_K with
# dmin = 7.5 d, which centres it on zero).
UNIT_STD = {Q.Q4_K: 257.0, Q.Q6_K: 1366.0, Q.Q5_0: 9.2, Q.Q8_0: 73.9}
FALLBACK = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the layers (of n) that get more bits."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def q4_k_m_types(shapes: dict[str, tuple[int, ...]], n_layers: int) -> dict[str, Q]:
    """The storage type of each tensor (name -> numpy-order shape) under Q4_K_M."""
    attn_v = [name for name in shapes if name.endswith(".attn_v.weight")]
    attn_v.sort(key=lambda name: int(name.split(".")[1]))
    types: dict[str, Q] = {}
    for name, shape in shapes.items():
        if len(shape) < 2 or name.endswith("ffn_gate_inp.weight"):
            qtype = Q.F32
        elif name == "token_embd.weight":
            qtype = Q.Q6_K
        elif name.endswith(".attn_v.weight"):
            qtype = Q.Q6_K if use_more_bits(attn_v.index(name), len(attn_v)) else Q.Q4_K
        elif name.endswith(("ffn_down.weight", "ffn_down_exps.weight")):
            qtype = Q.Q8_0 if use_more_bits(int(name.split(".")[1]), n_layers) else Q.Q5_0
        elif name == "self_cond_down.weight":
            qtype = Q.Q5_0
        else:
            qtype = Q.Q4_K
        while shape[-1] % GGML_QUANT_SIZES[qtype][0]:
            qtype = FALLBACK.get(qtype, Q.F16)
        types[name] = qtype
    return types


def random_blocks(qtype: Q, shape: tuple[int, ...], std: float, rng: np.random.Generator) -> np.ndarray:
    """Random valid `qtype` data for numpy `shape` with values of about `std`: uint8 rows."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (*shape[:-1], shape[-1] // block, type_size), dtype=np.uint8)
    d = np.float16(std / UNIT_STD[qtype])
    offsets = {Q.Q4_K: {0: d, 2: np.float16(7.5 * d)}, Q.Q6_K: {208: d}}.get(qtype, {0: d})
    for offset, value in offsets.items():
        blocks[..., offset:offset + 2] = np.full(blocks.shape[:-1] + (1,), value, np.float16).view(np.uint8)
    return blocks.reshape(*shape[:-1], -1)


def write_q4_k_m(src: Path, out: Path, seed: int = 0) -> Path:
    """OUT: SRC's metadata with its tensors stored in the Q4_K_M types (see the module docstring)."""
    converter = _converter()
    rng = np.random.default_rng(seed)
    with open_gguf(src) as f:
        types = q4_k_m_types({name: info.shape for name, info in f.tensors.items()}, int(f.arch_get("block_count")))
        w = gguf.GGUFWriter(str(out), f.architecture)
        converter.write_kvs(w, {k: v for k, v in f.metadata.items()
                                if not k.startswith(("GGUF.", "general.architecture"))})
        for name, info in f.tensors.items():
            values = load_tensor(f, name).numpy()
            qtype = types[name]
            if qtype in UNIT_STD:
                data = random_blocks(qtype, info.shape, float(values.std()), rng)
            else:
                data = values.astype(np.float32 if qtype == Q.F32 else np.float16)
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


MATRIX_STD = 0.02
"""Spread of the random quantised matrices of `write_random_gguf`."""
ROUTER_STD = 1.0
"""Spread of the random F32 router: its input is RMS-normalised and scaled by hidden^-½, so this
gives router logits of about unit spread (a realistic, uneven routing)."""
VECTOR_SPREAD = 0.05
"""Vectors (norms, scales, layer scalars, rope factors) are 1 ± this."""


def random_blocks_torch(qtype: Q, shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    """`random_blocks` drawn with torch on the generator's device (fast on a GPU): uint8 rows of
    random valid `qtype` blocks whose fp16 scales give values of about `std`."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block)
    words = torch.empty(-(-n_blocks * type_size // 4), dtype=torch.int32, device=generator.device)
    words.random_(-2**31, 2**31, generator=generator)  # every bit random
    blocks = words.view(torch.uint8)[:n_blocks * type_size].view(n_blocks, type_size)
    d = std / UNIT_STD[qtype]
    offsets = {Q.Q4_K: {0: d, 2: 7.5 * d}, Q.Q6_K: {208: d}}.get(qtype, {0: d})
    for offset, value in offsets.items():
        half = torch.tensor([value], dtype=torch.float16, device=blocks.device)
        blocks[:, offset:offset + 2] = half.view(torch.uint8)
    return blocks.view(*shape[:-1], -1)


def _random_tensor(name: str, qtype: Q, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One tensor's stored data (uint8 blocks or float values) for `write_random_gguf`."""
    if qtype in UNIT_STD:
        return random_blocks_torch(qtype, shape, MATRIX_STD, generator)
    dtype = {Q.F32: torch.float32, Q.F16: torch.float16}[qtype]
    values = torch.randn(shape, generator=generator, device=generator.device)
    if len(shape) > 1:  # the router (F32 in Q4_K_M) or a matrix that fell back to F16
        return (values * (ROUTER_STD if name.endswith("ffn_gate_inp.weight") else MATRIX_STD)).to(dtype)
    return (1.0 + VECTOR_SPREAD * values).to(dtype)


def _metadata_value(value):
    """A metadata value in the form `hf_to_gguf.write_kvs` writes: lists become typed arrays."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        return np.array(value, dtype=bool if isinstance(value[0], bool) else np.int32)
    return value


def write_random_gguf(out: Path, layout: dict[str, tuple[Q, tuple[int, ...]]], metadata: dict, seed: int = 0,
                      device: str | torch.device = "cpu", chunk_bytes: int = 256 * 2**20) -> Path:
    """A GGUF with `layout` (name -> (type, numpy-order shape)) and `metadata`, holding random
    valid blocks (see MATRIX_STD, ROUTER_STD, VECTOR_SPREAD), written tensor by tensor and chunk
    by chunk (at most about `chunk_bytes` in memory), the randomness drawn on `device`. Any size
    works: tests use tiny layouts, the GPU benchmark the published 16.8 GB one. Without a
    `tokenizer.ggml.tokens` in `metadata`, placeholder tokens (one per embedding row) are added."""
    generator = torch.Generator(device=device).manual_seed(seed)
    w = _write_header(out, layout, metadata)
    assert w.fout is not None
    fout = w.fout[0]
    for name, (qtype, shape) in layout.items():
        block, type_size = GGML_QUANT_SIZES[qtype]
        row_bytes = shape[-1] // block * type_size
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        step = max(1, chunk_bytes // row_bytes)
        w.write_padding(fout, fout.tell())
        for first in range(0, rows, step):
            part = (min(step, rows - first), shape[-1]) if len(shape) > 1 else shape
            data = _random_tensor(name, qtype, part, generator).cpu().numpy()
            data.view(np.uint8).tofile(fout)
        w.write_padding(fout, rows * row_bytes)
    w.close()
    return out


def _write_header(out: Path, layout: dict[str, tuple[Q, tuple[int, ...]]], metadata: dict) -> gguf.GGUFWriter:
    """A GGUFWriter that has written the header, metadata and tensor infos of a GGUF with `layout`
    and `metadata` (placeholder tokens added as `write_random_gguf` says), its data still to write."""
    w = gguf.GGUFWriter(str(out), metadata["general.architecture"])
    kvs = {k: _metadata_value(v) for k, v in metadata.items() if k != "general.architecture"}
    if "tokenizer.ggml.tokens" not in kvs:  # the engine checks that a vocabulary is there, not what it says
        kvs["tokenizer.ggml.tokens"] = [f"<t{i}>" for i in range(layout["token_embd.weight"][1][0])]
    _converter().write_kvs(w, kvs)
    for name, (qtype, shape) in layout.items():
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_bytes = int(np.prod(shape, dtype=np.int64)) // block * type_size
        raw_shape = (*shape[:-1], shape[-1] // block * type_size)
        w.add_tensor_info(name, raw_shape, np.dtype(np.uint8), n_bytes, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    return w


def write_sparse_gguf(out: Path, layout: dict[str, tuple[Q, tuple[int, ...]]], metadata: dict,
                      values: dict[str, np.ndarray]) -> Path:
    """A GGUF like `write_random_gguf`'s in which only `values` (name -> the first stored bytes of
    that tensor, any dtype: all of it, or its first rows) are written: all other data is a hole of
    the file, zero bytes that take no disk space on a filesystem with sparse files. About a second
    for the published 16.8 GB layout."""
    w = _write_header(out, layout, metadata)
    assert w.fout is not None
    fout = w.fout[0]
    data_start = w.ggml_pad(fout.tell(), w.data_alignment)
    offset = 0
    for name, (qtype, shape) in layout.items():
        block, type_size = GGML_QUANT_SIZES[qtype]
        n_bytes = int(np.prod(shape, dtype=np.int64)) // block * type_size
        if name in values:
            data = np.ascontiguousarray(values[name]).view(np.uint8)
            if data.size > n_bytes:
                raise ValueError(f"{name}: {data.size} bytes of values for a {n_bytes}-byte tensor")
            fout.seek(data_start + offset)
            data.tofile(fout)
        offset += w.ggml_pad(n_bytes, w.data_alignment)
    fout.truncate(data_start + offset)
    w.close()
    return out


def _converter():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hf_to_gguf  # a sibling script

    return hf_to_gguf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_q4_k_m(args.src, args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
