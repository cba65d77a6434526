"""The fused layer glue (kernels/fused_ops.py) against the reference forward pass's own expressions
(functional.rms_norm and rotate_half, softmax and torch.topk, as ops.ReferenceOps combines them),
at the real sizes with a few tokens, under Triton's interpreter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from dg_chat.engine.backends.torch_dg.functional import rms_norm, rope_inv_freq, rotate_half
from dg_chat.engine.backends.torch_dg.kernels import fused_ops, runtime

EPS = 1e-6
HIDDENS = [2816, 192]  # the model's, and one that is not a power of two
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 3e-3,
       # the interpreter truncates float32 -> bf16 where a GPU (and torch) rounds to nearest
       # (gpu-engine.md §7.1), so bf16 checks only the plumbing; its numerics need a GPU
       torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)


def randn(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).to(dtype)


def assert_close(got: torch.Tensor, ref: torch.Tensor) -> None:
    """max|got - ref| / max|ref| within the dtype's tolerance, same dtype and shape."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    err = ((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
    assert err <= TOL[ref.dtype], f"relative error {err:.2e}"


def once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args) with exactly one kernel launch."""
    with runtime.counting() as counter:
        out = fn(*args, **kwargs)
        assert counter.launches == 1
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDENS)
@pytest.mark.parametrize("weighted", [True, False])
def test_rms_norm(dtype: torch.dtype, hidden: int, weighted: bool) -> None:
    x = randn(3, hidden + 8, dtype=dtype, scale=3.0)[:, :hidden]  # rows with a wider stride
    w = randn(hidden, dtype=dtype) if weighted else None
    assert_close(once(fused_ops.rms_norm, x, w, EPS), rms_norm(x, w, EPS))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDENS)
def test_post_attention(dtype: torch.dtype, hidden: int) -> None:
    t = 4
    attn, h = randn(t, hidden, dtype=dtype, scale=2.0), randn(t, hidden, dtype=dtype, scale=5.0)
    w_post, w_ffn, w_moe, router_scale = (randn(hidden, dtype=dtype) for _ in range(4))
    got = once(fused_ops.post_attention, attn, h, w_post, w_ffn, w_moe, router_scale, EPS)

    h_new = h + rms_norm(attn, w_post, EPS)
    ref = (h_new, rms_norm(h_new, w_ffn, EPS), rms_norm(h_new, w_moe, EPS),
           rms_norm(h_new, None, EPS) * router_scale * hidden ** -0.5)
    for g, r in zip(got, ref, strict=True):
        assert_close(g, r)


def rope_tables(head_dim: int, sliding: bool, t: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [t, head_dim] at positions 1000.., as DiffusionGemma._positions builds them
    (full layers: proportional RoPE, only the first 64 frequency pairs rotate; spec §1.4)."""
    factors = None if sliding else torch.tensor([1.0] * 64 + [1e30] * (head_dim // 2 - 64))
    inv_freq = rope_inv_freq(head_dim, 1e4 if sliding else 1e6, factors)
    freqs = torch.arange(1000, 1000 + t)[:, None].float() * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


HEAD_CASES = [  # (what, heads, head_dim, into the cache): the three uses per layer, both layer kinds
    ("q", 16, 256, False), ("q", 16, 512, False),
    ("k", 8, 256, True), ("k", 2, 512, True),
    ("v", 8, 256, True), ("v", 2, 512, True), ("v", 2, 512, False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("what,heads,head_dim,into_cache", HEAD_CASES)
def test_head_norm_rope(dtype: torch.dtype, what: str, heads: int, head_dim: int, into_cache: bool) -> None:
    t = 3
    proj = randn(t, heads * head_dim + 64, dtype=dtype, scale=4.0)  # part of a wider projection
    x = proj[:, 64:].view(t, heads, head_dim)
    w = randn(head_dim, dtype=dtype) if what != "v" else None
    cos, sin = rope_tables(head_dim, head_dim == 256, t, dtype) if what != "v" else (None, None)

    ref = rms_norm(x, w, EPS)
    if cos is not None:
        ref = ref * cos[:, None] + rotate_half(ref) * sin[:, None]
    if not into_cache:
        assert_close(once(fused_ops.head_norm_rope, x, w, cos, sin, EPS), ref)
        return
    cache = randn(2, heads, 10, head_dim, dtype=dtype)  # [layers, kv_heads, capacity, head_dim]
    before = cache.clone()
    out = cache[1, :, 4:4 + t]
    if cos is not None:  # the model keeps its tables as [T, 1, head_dim]
        cos, sin = cos[:, None], sin[:, None]
    assert once(fused_ops.head_norm_rope, x, w, cos, sin, EPS, out=out) is out
    assert_close(out, ref.transpose(0, 1))
    cache[1, :, 4:4 + t] = before[1, :, 4:4 + t]
    assert torch.equal(cache, before)  # nothing written outside the slice


def test_head_norm_rope_rejects_a_wrong_cache_slice() -> None:
    x = randn(3, 2, 8)
    with pytest.raises(ValueError, match="expected out"):
        fused_ops.head_norm_rope(x, None, None, None, EPS, out=torch.empty(3, 2, 8))


def router_logits(t: int, experts: int, k: int) -> torch.Tensor:
    """Random rows, then rows with exact ties: all experts equal; a tie straddling the k-th
    place; tied pairs at the top."""
    logits = randn(t, experts, scale=2.0)
    logits[1] = 0.5
    logits[2, :] = -1.0
    logits[2, torch.randperm(experts)[:2 * k]] = 1.5
    logits[3, 2::5] = logits[3].max() + 1.0
    logits[3, 7::9] = logits[3].max() + 2.0
    return logits


@pytest.mark.parametrize("experts,k,scale_dtype", [(128, 8, torch.float32), (128, 8, torch.bfloat16),
                                                    (256, 16, torch.float32), (96, 6, torch.float32)])
def test_route(experts: int, k: int, scale_dtype: torch.dtype) -> None:
    """torch.topk on the CPU does not order equal probabilities by index (all-equal rows come
    back as e.g. 84, 87, 86, ...), so the kernel follows spec §1.3's 'lower expert index wins':
    the same values as torch.topk, the indices of a stable descending sort."""
    logits = router_logits(5, experts, k)
    scale = (torch.rand(experts) + 0.5).to(scale_dtype)  # the model keeps it in the compute dtype
    top_w, top_i = once(fused_ops.route, logits, k, scale)

    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    values, indices = torch.topk(probs, k=k, dim=-1)
    order = torch.sort(probs, dim=-1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(probs.gather(-1, order), values)
    assert top_i.dtype == torch.int32 and torch.equal(top_i.long(), order)
    assert torch.equal(top_i[0].long(), indices[0])  # no ties: exactly torch.topk
    assert_close(top_w, values / values.sum(dim=-1, keepdim=True) * scale[order])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", HIDDENS)
def test_layer_tail(dtype: torch.dtype, hidden: int) -> None:
    t = 5
    residual = randn(t, hidden, dtype=dtype, scale=5.0)
    dense, experts = randn(t, hidden, dtype=dtype, scale=0.3), randn(t, hidden, dtype=dtype, scale=0.05)
    w1, w2, w_post, next_norm = (randn(hidden, dtype=dtype) for _ in range(4))
    layer_scale = torch.tensor([0.7], dtype=dtype)
    h, next_in = once(fused_ops.layer_tail, residual, dense, experts, w1, w2, w_post, layer_scale, next_norm, EPS)

    expected = (residual + rms_norm(rms_norm(dense, w1, EPS) + rms_norm(experts, w2, EPS), w_post, EPS)) * layer_scale
    assert_close(h, expected)
    assert_close(next_in, rms_norm(expected, next_norm, EPS))
