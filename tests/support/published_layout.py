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

ARCH = "diffusion-gemma"
N_LAYERS, HIDDEN, FF, HEADS, EXPERTS, EXPERTS_USED, EXPERT_FF = 30, 2816, 2112, 16, 128, 8, 704
VOCAB, WINDOW, CANVAS, CONTEXT = 262144, 1024, 256, 262144
SLIDING_HEAD_DIM, SLIDING_KV_HEADS, FULL_HEAD_DIM, FULL_KV_HEADS = 256, 8, 512, 2
FULL_LAYERS = frozenset({5, 11, 17, 23, 29})
Q6_K_ATTN_V = frozenset({0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23, 24})
"""Indices among the 25 sliding layers (not layer numbers) whose attn_v is Q6_K."""
Q8_0_DOWN_LAYERS = frozenset({0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29})
"""Layers whose ffn_down and ffn_down_exps are Q8_0 (Q5_0 elsewhere)."""

Layout = dict[str, tuple[Q, tuple[int, ...]]]


def published_q4_k_m_layout() -> Layout:
    """name -> (type, numpy-order shape) of the 692 tensors of the published Q4_K_M."""
    h = HIDDEN
    layout: Layout = {
        "token_embd.weight": (Q.Q6_K, (VOCAB, h)),
        "output_norm.weight": (Q.F32, (h,)),
        "rope_freqs.weight": (Q.F32, (FULL_HEAD_DIM // 2,)),
        "self_cond_pre_norm.weight": (Q.F32, (h,)),
        "self_cond_gate.weight": (Q.Q4_K, (FF, h)),
        "self_cond_up.weight": (Q.Q4_K, (FF, h)),
        "self_cond_down.weight": (Q.Q5_0, (h, FF)),
    }
    sliding_index = 0
    for i in range(N_LAYERS):
        sliding = i not in FULL_LAYERS
        hd, kv = (SLIDING_HEAD_DIM, SLIDING_KV_HEADS) if sliding else (FULL_HEAD_DIM, FULL_KV_HEADS)
        down = Q.Q8_0 if i in Q8_0_DOWN_LAYERS else Q.Q5_0
        block: Layout = {
            "attn_norm.weight": (Q.F32, (h,)),
            "attn_q.weight": (Q.Q4_K, (HEADS * hd, h)),
            "attn_k.weight": (Q.Q4_K, (kv * hd, h)),
            "attn_q_norm.weight": (Q.F32, (hd,)),
            "attn_k_norm.weight": (Q.F32, (hd,)),
            "attn_output.weight": (Q.Q4_K, (h, HEADS * hd)),
            "post_attention_norm.weight": (Q.F32, (h,)),
            "ffn_norm.weight": (Q.F32, (h,)),
            "ffn_gate.weight": (Q.Q4_K, (FF, h)),
            "ffn_up.weight": (Q.Q4_K, (FF, h)),
            "ffn_down.weight": (down, (h, FF)),
            "post_ffw_norm_1.weight": (Q.F32, (h,)),
            "ffn_gate_inp.weight": (Q.F32, (EXPERTS, h)),
            "ffn_gate_inp.scale": (Q.F32, (h,)),
            "pre_ffw_norm_2.weight": (Q.F32, (h,)),
            "ffn_gate_up_exps.weight": (Q.Q4_K, (EXPERTS, 2 * EXPERT_FF, h)),
            "ffn_down_exps.weight": (down, (EXPERTS, h, EXPERT_FF)),
            "ffn_down_exps.scale": (Q.F32, (EXPERTS,)),
            "post_ffw_norm_2.weight": (Q.F32, (h,)),
            "post_ffw_norm.weight": (Q.F32, (h,)),
            "layer_output_scale.weight": (Q.F32, (1,)),
            "enc_layer_output_scale.weight": (Q.F32, (1,)),
        }
        if sliding:
            block["attn_v.weight"] = (Q.Q6_K if sliding_index in Q6_K_ATTN_V else Q.Q4_K, (kv * hd, h))
            sliding_index += 1
        layout.update({f"blk.{i}.{name}": value for name, value in block.items()})
    return layout


def published_metadata() -> dict[str, Any]:
    """The model metadata of the published files (spec §5.1) that the engine reads."""
    sliding = [i not in FULL_LAYERS for i in range(N_LAYERS)]
    keys: dict[str, Any] = {
        "block_count": N_LAYERS, "context_length": CONTEXT, "embedding_length": HIDDEN,
        "feed_forward_length": FF, "attention.head_count": HEADS,
        "attention.head_count_kv": [SLIDING_KV_HEADS if s else FULL_KV_HEADS for s in sliding],
        "rope.freq_base": 1e6, "rope.freq_base_swa": 1e4, "attention.layer_norm_rms_epsilon": 1e-6,
        "expert_count": EXPERTS, "expert_used_count": EXPERTS_USED, "expert_feed_forward_length": EXPERT_FF,
        "attention.key_length": FULL_HEAD_DIM, "attention.value_length": FULL_HEAD_DIM,
        "attention.key_length_swa": SLIDING_HEAD_DIM, "attention.value_length_swa": SLIDING_HEAD_DIM,
        "final_logit_softcapping": 30.0, "attention.sliding_window": WINDOW,
        "attention.sliding_window_pattern": sliding,
    }
    return {"general.architecture": ARCH, **{f"{ARCH}.{k}": v for k, v in keys.items()},
            "diffusion.canvas_length": CANVAS}


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
    return LayoutIndex(published_q4_k_m_layout(), published_metadata())


# -- the same layout at any dimensions (benchmarks' tiny twins of the published file) ----------

@dataclass(frozen=True)
class Dims:
    """The dimensions of a DiffusionGemma layout; the defaults are the published 26B-A4B's."""

    n_layers: int = N_LAYERS
    hidden: int = HIDDEN
    ff: int = FF
    heads: int = HEADS
    experts: int = EXPERTS
    experts_used: int = EXPERTS_USED
    expert_ff: int = EXPERT_FF
    vocab: int = VOCAB
    window: int = WINDOW
    canvas: int = CANVAS
    context: int = CONTEXT
    sliding_head_dim: int = SLIDING_HEAD_DIM
    sliding_kv_heads: int = SLIDING_KV_HEADS
    full_head_dim: int = FULL_HEAD_DIM
    full_kv_heads: int = FULL_KV_HEADS
    full_layers: frozenset[int] = FULL_LAYERS


def _more_bits(i: int, n: int) -> bool:
    """llama.cpp's `use_more_bits(i, n)` (the layers of n that Q4_K_M stores with more bits)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _fits(qtype: Q, k: int) -> Q:
    """`qtype`, or llama.cpp's fallback when rows of k values are not whole blocks of it."""
    fallback = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}
    while k % GGML_QUANT_SIZES[qtype][0]:
        qtype = fallback.get(qtype, Q.F16)
    return qtype


def q4_k_m_layout(dims: Dims = Dims()) -> Layout:
    """name -> (type, numpy-order shape) of a Q4_K_M file with `dims`: the published layout's
    tensors and type rules (`published_q4_k_m_layout() == q4_k_m_layout()`), with the "more bits"
    layers and attn_v chosen by llama.cpp's rule for the layer counts of `dims`."""
    h, ff = dims.hidden, dims.ff
    layout: Layout = {
        "token_embd.weight": (_fits(Q.Q6_K, h), (dims.vocab, h)),
        "output_norm.weight": (Q.F32, (h,)),
        "rope_freqs.weight": (Q.F32, (dims.full_head_dim // 2,)),
        "self_cond_pre_norm.weight": (Q.F32, (h,)),
        "self_cond_gate.weight": (_fits(Q.Q4_K, h), (ff, h)),
        "self_cond_up.weight": (_fits(Q.Q4_K, h), (ff, h)),
        "self_cond_down.weight": (_fits(Q.Q5_0, ff), (h, ff)),
    }
    n_sliding = dims.n_layers - len(dims.full_layers)
    sliding_index = 0
    for i in range(dims.n_layers):
        sliding = i not in dims.full_layers
        hd, kv = (dims.sliding_head_dim, dims.sliding_kv_heads) if sliding else (dims.full_head_dim, dims.full_kv_heads)
        down = Q.Q8_0 if _more_bits(i, dims.n_layers) else Q.Q5_0
        q4k = _fits(Q.Q4_K, h)
        block: Layout = {
            "attn_norm.weight": (Q.F32, (h,)),
            "attn_q.weight": (q4k, (dims.heads * hd, h)),
            "attn_k.weight": (q4k, (kv * hd, h)),
            "attn_q_norm.weight": (Q.F32, (hd,)),
            "attn_k_norm.weight": (Q.F32, (hd,)),
            "attn_output.weight": (_fits(Q.Q4_K, dims.heads * hd), (h, dims.heads * hd)),
            "post_attention_norm.weight": (Q.F32, (h,)),
            "ffn_norm.weight": (Q.F32, (h,)),
            "ffn_gate.weight": (q4k, (ff, h)),
            "ffn_up.weight": (q4k, (ff, h)),
            "ffn_down.weight": (_fits(down, ff), (h, ff)),
            "post_ffw_norm_1.weight": (Q.F32, (h,)),
            "ffn_gate_inp.weight": (Q.F32, (dims.experts, h)),
            "ffn_gate_inp.scale": (Q.F32, (h,)),
            "pre_ffw_norm_2.weight": (Q.F32, (h,)),
            "ffn_gate_up_exps.weight": (q4k, (dims.experts, 2 * dims.expert_ff, h)),
            "ffn_down_exps.weight": (_fits(down, dims.expert_ff), (dims.experts, h, dims.expert_ff)),
            "ffn_down_exps.scale": (Q.F32, (dims.experts,)),
            "post_ffw_norm_2.weight": (Q.F32, (h,)),
            "post_ffw_norm.weight": (Q.F32, (h,)),
            "layer_output_scale.weight": (Q.F32, (1,)),
            "enc_layer_output_scale.weight": (Q.F32, (1,)),
        }
        if sliding:
            v_type = Q.Q6_K if _more_bits(sliding_index, n_sliding) else Q.Q4_K
            block["attn_v.weight"] = (_fits(v_type, h), (kv * hd, h))
            sliding_index += 1
        layout.update({f"blk.{i}.{name}": value for name, value in block.items()})
    return layout


def model_metadata(dims: Dims = Dims()) -> dict[str, Any]:
    """`published_metadata()` for a model with `dims` (equal to it for the default dims)."""
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
