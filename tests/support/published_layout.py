"""The tensor layout and metadata of the published DiffusionGemma 26B-A4B Q4_K_M GGUF
(unsloth/diffusiongemma-26B-A4B-it-GGUF), for tests that need its real sizes without its 16.8 GB.

Sources: diffusiongemma-spec.md §5.1 (metadata), §5.2 (names and shapes), §5.3 (type counts) and
gpu-engine.md §5.7 (which tensor has which type: llama.cpp's Q4_K_M rules).
"""

from __future__ import annotations

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
