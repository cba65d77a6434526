"""The tensor layout and metadata of the published DiffusionGemma 26B-A4B Q4_K_M GGUF
(unsloth/diffusiongemma-26B-A4B-it-GGUF), for tests that need its real sizes without its 16.8 GB.

Sources: diffusiongemma-spec.md §5.1 (metadata), §5.2 (names and shapes), §5.3 (type counts) and
gpu-engine.md §5.7 (which tensor has which type: llama.cpp's Q4_K_M rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from dg_chat.gguf.reader import GGUFError, TensorInfo
from tests.support.scripts import load_script

ARCH = "diffusion-gemma"

Layout = dict[str, tuple[Q, tuple[int, ...]]]


@dataclass(frozen=True)
class Dims:
    """The dimensions of a DiffusionGemma layout; the defaults are the published 26B-A4B's (spec §1.1)."""

    n_layers: int = 30
    hidden: int = 2816
    ff: int = 2112
    heads: int = 16
    experts: int = 128
    experts_used: int = 8
    expert_ff: int = 704
    vocab: int = 262144
    window: int = 1024
    canvas: int = 256
    context: int = 262144
    sliding_head_dim: int = 256
    sliding_kv_heads: int = 8
    full_head_dim: int = 512
    full_kv_heads: int = 2
    full_layers: frozenset[int] = frozenset({5, 11, 17, 23, 29})


def shapes(dims: Dims = Dims()) -> dict[str, tuple[int, ...]]:
    """name -> numpy-order shape of every tensor (spec §5.2: 7 global, 23 per sliding layer, 22 per full)."""
    h, ff = dims.hidden, dims.ff
    out: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (dims.vocab, h), "output_norm.weight": (h,),
        "rope_freqs.weight": (dims.full_head_dim // 2,),
        "self_cond_pre_norm.weight": (h,), "self_cond_gate.weight": (ff, h), "self_cond_up.weight": (ff, h),
        "self_cond_down.weight": (h, ff),
    }
    for i in range(dims.n_layers):
        sliding = i not in dims.full_layers
        hd, kv = (dims.sliding_head_dim, dims.sliding_kv_heads) if sliding else (dims.full_head_dim, dims.full_kv_heads)
        block = {
            "attn_norm.weight": (h,), "attn_q.weight": (dims.heads * hd, h), "attn_k.weight": (kv * hd, h),
            "attn_q_norm.weight": (hd,), "attn_k_norm.weight": (hd,), "attn_output.weight": (h, dims.heads * hd),
            "post_attention_norm.weight": (h,), "ffn_norm.weight": (h,), "ffn_gate.weight": (ff, h),
            "ffn_up.weight": (ff, h), "ffn_down.weight": (h, ff), "post_ffw_norm_1.weight": (h,),
            "ffn_gate_inp.weight": (dims.experts, h), "ffn_gate_inp.scale": (h,), "pre_ffw_norm_2.weight": (h,),
            "ffn_gate_up_exps.weight": (dims.experts, 2 * dims.expert_ff, h),
            "ffn_down_exps.weight": (dims.experts, h, dims.expert_ff), "ffn_down_exps.scale": (dims.experts,),
            "post_ffw_norm_2.weight": (h,), "post_ffw_norm.weight": (h,), "layer_output_scale.weight": (1,),
            "enc_layer_output_scale.weight": (1,),
        }
        if sliding:
            block["attn_v.weight"] = (kv * hd, h)
        out.update({f"blk.{i}.{name}": shape for name, shape in block.items()})
    return out


def q4_k_m_layout(dims: Dims = Dims()) -> Layout:
    """name -> (type, numpy-order shape) of a Q4_K_M file with `dims`, the types by llama.cpp's
    rules (scripts/q4_k_m_layout.py); with the default dims, the published file's 692 tensors."""
    tensors = shapes(dims)
    types = load_script("q4_k_m_layout").q4_k_m_types(tensors, dims.n_layers)
    return {name: (types[name], shape) for name, shape in tensors.items()}


def tensor_bytes(qtype: Q, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `qtype` and numpy `shape` as stored in a GGUF."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape, dtype=np.int64)) // block * type_size


class LayoutIndex:
    """The parsed header of a GGUF with this layout and metadata, without its data: what
    `HParams.from_gguf` and the memory estimate read from a `GGUFFile`."""

    def __init__(self, layout: Layout, metadata: dict[str, Any], path: Path = Path("published-Q4_K_M.gguf"),
                 alignment: int = 32):
        self.path, self.metadata = path, metadata
        self.tensors: dict[str, TensorInfo] = {}
        offset = 0
        for name, (qtype, shape) in layout.items():
            n_bytes = tensor_bytes(qtype, shape)
            self.tensors[name] = TensorInfo(name, qtype, shape, offset, n_bytes)
            offset = -(-(offset + n_bytes) // alignment) * alignment

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: tensor '{name}' is missing") from None


def published_index() -> LayoutIndex:
    """The header of the published Q4_K_M file."""
    return LayoutIndex(q4_k_m_layout(), model_metadata())


def model_metadata(dims: Dims = Dims()) -> dict[str, Any]:
    """The model metadata the engine reads (spec §5.1) for a model with `dims`."""
    sliding = [i not in dims.full_layers for i in range(dims.n_layers)]
    keys: dict[str, Any] = {
        "block_count": dims.n_layers, "context_length": dims.context, "embedding_length": dims.hidden,
        "feed_forward_length": dims.ff, "attention.head_count": dims.heads,
        "attention.head_count_kv": [dims.sliding_kv_heads if s else dims.full_kv_heads for s in sliding],
        "rope.freq_base": 1e6, "rope.freq_base_swa": 1e4, "attention.layer_norm_rms_epsilon": 1e-6,
        "expert_count": dims.experts, "expert_used_count": dims.experts_used,
        "expert_feed_forward_length": dims.expert_ff,
        "attention.key_length": dims.full_head_dim, "attention.value_length": dims.full_head_dim,
        "attention.key_length_swa": dims.sliding_head_dim, "attention.value_length_swa": dims.sliding_head_dim,
        "final_logit_softcapping": 30.0, "attention.sliding_window": dims.window,
        "attention.sliding_window_pattern": sliding,
    }
    return {"general.architecture": ARCH, **{f"{ARCH}.{k}": v for k, v in keys.items()},
            "diffusion.canvas_length": dims.canvas}
