"""The numerical building blocks of DiffusionGemma's reference forward pass, written the way
transformers computes them (same operations, same order), so that float32 results agree."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x * (mean(x²) + eps)^-½ [* w], in float32 (Gemma 4: plain w, not 1 + w)."""
    xf = x.float()
    out = xf * torch.pow(xf.pow(2).mean(-1, keepdim=True) + eps, -0.5)
    if weight is not None:
        out = out * weight.float()
    return out.type_as(x)


def rope_inv_freq(head_dim: int, base: float, freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """NeoX-style RoPE frequencies, one per dimension pair. Full-attention layers use proportional
    RoPE, which GGUF encodes as frequency divisors: 1 on the rotated pairs, 1e30 (no rotation) after."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    return inv_freq if freq_factors is None else inv_freq / freq_factors


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """Attention ([heads, T, head_dim] in and out, scale 1) called the way transformers' sdpa
    integration calls it: batched 4-D, grouped K/V heads by `enable_gqa` only without a mask and
    for head_dim <= 256, repeated otherwise. The same call picks the same kernel, so the results
    round the same way."""
    q, k, v = q[None], k[None], v[None]
    groups = q.shape[1] // k.shape[1]
    gqa = {}
    if groups > 1 and mask is None and k.shape[-1] <= 256:
        gqa["enable_gqa"] = True
    elif groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[None, None], scale=1.0,
                                         is_causal=causal and q.shape[2] > 1, **gqa)
    return out[0]


def gelu_glu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(gelu_tanh(gate(x)) * up(x)): the dense, expert and self-conditioning MLPs."""
    return F.linear(F.gelu(F.linear(x, gate), approximate="tanh") * F.linear(x, up), down)
