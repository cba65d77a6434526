"""The elementwise and normalisation glue of a transformer layer, one launch per function
(diffusiongemma-spec.md §1.3-1.4; gpu-engine.md §6.4, §6.7).

Each function computes what the reference forward pass computes between its matmuls
(`ops.ReferenceOps` with `functional.rms_norm` and `rotate_half`), in float32 inside the kernel,
and returns tensors in the input dtype. Wherever the reference rounds an intermediate to the
compute dtype (every `rms_norm` result, every bf16/fp16 elementwise op) the kernels round it too,
so that half-precision results follow the reference's roundings, not just its formulas. One
program handles one row (a token, or one head of a token) with a power-of-two block covering it;
nothing reads a tensor back to the host, so every function can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch

from dg_chat.engine.backends.torch_dg.kernels import runtime
from dg_chat.engine.backends.torch_dg.kernels.runtime import tl, triton

# -- device helpers ---------------------------------------------------------------------------

@triton.jit
def _round(x, DTYPE: tl.constexpr):
    """x rounded to the compute dtype and back to float32: a rounding the reference makes."""
    return x.to(DTYPE).to(tl.float32)


@triton.jit
def _load_row(ptr, row, stride, cols, n):
    return tl.load(ptr + row * stride + cols, mask=cols < n, other=0.0).to(tl.float32)


@triton.jit
def _rstd(x, n, eps):
    """(mean(x²) + eps)^-½ over the first n elements of x (the rest are 0)."""
    return tl.rsqrt(tl.sum(x * x, 0) / n + eps)


@triton.jit
def _normed(x, n, eps, w_ptr, cols, HAS_WEIGHT: tl.constexpr):
    """functional.rms_norm before its final cast: x·rstd, then ·w (the same order of products)."""
    y = x * _rstd(x, n, eps)
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + cols, mask=cols < n, other=0.0).to(tl.float32)
    return y


# -- kernels ----------------------------------------------------------------------------------

@triton.jit
def _rms_norm_kernel(x_ptr, w_ptr, y_ptr, n, x_stride, eps,
                     HAS_WEIGHT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    y = _normed(_load_row(x_ptr, row, x_stride, cols, n), n, eps, w_ptr, cols, HAS_WEIGHT)
    tl.store(y_ptr + row * n + cols, y.to(y_ptr.dtype.element_ty), mask=cols < n)


@triton.jit
def _post_attention_kernel(attn_ptr, h_ptr, w_post_ptr, w_ffn_ptr, w_moe_ptr, router_scale_ptr,
                           h_out, ffn_out, moe_out, router_out, n, attn_stride, h_stride, eps,
                           router_mult, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    dt = h_out.dtype.element_ty
    attn = _round(_normed(_load_row(attn_ptr, row, attn_stride, cols, n), n, eps, w_post_ptr, cols, True), dt)
    h = _round(_load_row(h_ptr, row, h_stride, cols, n) + attn, dt)
    normed = h * _rstd(h, n, eps)  # one reduction serves the three norms of the residual
    w_ffn = tl.load(w_ffn_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    w_moe = tl.load(w_moe_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.load(router_scale_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    # the router reads the weightless norm: rounded, ·scale rounded, ·H^-½ (spec §1.3)
    router = _round(_round(normed, dt) * scale, dt) * router_mult
    out = row * n + cols
    tl.store(h_out + out, h.to(dt), mask=mask)
    tl.store(ffn_out + out, (normed * w_ffn).to(dt), mask=mask)
    tl.store(moe_out + out, (normed * w_moe).to(dt), mask=mask)
    tl.store(router_out + out, router.to(dt), mask=mask)


@triton.jit
def _head_norm_rope_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, y_ptr, half,
                           x_st, x_sh, x_sd, cs_st, cs_sd, y_st, y_sh, y_sd, eps,
                           HAS_WEIGHT: tl.constexpr, ROPE: tl.constexpr, BLOCK: tl.constexpr):
    """Program (t, head): the head's two halves are held apart, so that rotate_half is a swap."""
    t = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    d = tl.arange(0, BLOCK)
    mask = d < half
    dt = y_ptr.dtype.element_ty
    x = x_ptr + t * x_st + head * x_sh
    x1 = tl.load(x + d * x_sd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x + (d + half) * x_sd, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt((tl.sum(x1 * x1, 0) + tl.sum(x2 * x2, 0)) / (2 * half) + eps)
    y1, y2 = x1 * rstd, x2 * rstd
    if HAS_WEIGHT:
        y1 = y1 * tl.load(w_ptr + d, mask=mask, other=0.0).to(tl.float32)
        y2 = y2 * tl.load(w_ptr + d + half, mask=mask, other=0.0).to(tl.float32)
    if ROPE:  # q·cos + rotate_half(q)·sin, each product rounded as the reference rounds it
        y1, y2 = _round(y1, dt), _round(y2, dt)
        cs = t * cs_st + d * cs_sd
        c1 = tl.load(cos_ptr + cs, mask=mask, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + cs, mask=mask, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + cs + half * cs_sd, mask=mask, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + cs + half * cs_sd, mask=mask, other=0.0).to(tl.float32)
        y1, y2 = _round(y1 * c1, dt) - _round(y2 * s1, dt), _round(y2 * c2, dt) + _round(y1 * s2, dt)
    y = y_ptr + t * y_st + head * y_sh
    tl.store(y + d * y_sd, y1.to(dt), mask=mask)
    tl.store(y + (d + half) * y_sd, y2.to(dt), mask=mask)


@triton.jit
def _route_kernel(logits_ptr, expert_scale_ptr, w_out, i_out, n_experts, stride,
                  K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    e = tl.arange(0, BLOCK_E)
    valid = e < n_experts
    logits = tl.load(logits_ptr + row * stride + e, mask=valid, other=float("-inf")).to(tl.float32)
    p = tl.exp(logits - tl.max(logits, 0))
    p = tl.where(valid, p / tl.sum(p, 0), -1.0)  # padding ranks below every probability
    slot = tl.arange(0, BLOCK_K)
    top_w = tl.zeros([BLOCK_K], dtype=tl.float32)
    top_i = tl.zeros([BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(K):
        best = tl.max(p, 0)
        index = tl.min(tl.where(p == best, e, BLOCK_E), 0)  # ties: the lowest expert index
        top_w = tl.where(slot == j, best, top_w)
        top_i = tl.where(slot == j, index, top_i)
        p = tl.where(e == index, -2.0, p)
    top_w = top_w / tl.sum(top_w, 0)
    top_w = top_w * tl.load(expert_scale_ptr + top_i, mask=slot < K, other=0.0).to(tl.float32)
    tl.store(w_out + row * K + slot, top_w, mask=slot < K)
    tl.store(i_out + row * K + slot, top_i, mask=slot < K)


@triton.jit
def _layer_tail_kernel(residual_ptr, dense_ptr, experts_ptr, w_post1_ptr, w_post2_ptr, w_post_ptr,
                       layer_scale_ptr, next_norm_ptr, h_out, next_out, n,
                       residual_stride, dense_stride, experts_stride, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    dt = h_out.dtype.element_ty
    dense = _round(_normed(_load_row(dense_ptr, row, dense_stride, cols, n), n, eps, w_post1_ptr, cols, True), dt)
    experts = _round(_normed(_load_row(experts_ptr, row, experts_stride, cols, n), n, eps, w_post2_ptr, cols, True), dt)
    both = _round(dense + experts, dt)
    h = _round(_load_row(residual_ptr, row, residual_stride, cols, n)
               + _round(_normed(both, n, eps, w_post_ptr, cols, True), dt), dt)
    h = _round(h * tl.load(layer_scale_ptr).to(tl.float32), dt)
    tl.store(h_out + row * n + cols, h.to(dt), mask=mask)
    tl.store(next_out + row * n + cols, _normed(h, n, eps, next_norm_ptr, cols, True).to(dt), mask=mask)


# -- host wrappers ----------------------------------------------------------------------------

def _check_device(x: torch.Tensor) -> None:
    reason = runtime.unavailable_reason(x.device)
    if reason is not None:
        raise RuntimeError(reason)


def _rows(x: torch.Tensor, *others: torch.Tensor | None) -> tuple[int, int]:
    """(T, H) of x [T, H] with unit column stride; `others` must match it (None: absent)."""
    _check_device(x)
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"expected rows [T, H] with contiguous columns, got {tuple(x.shape)} strides {x.stride()}")
    for other in others:
        if other is not None and (other.shape != x.shape or other.stride(1) != 1 or other.dtype != x.dtype):
            raise ValueError(f"{tuple(other.shape)} {other.dtype} does not match {tuple(x.shape)} {x.dtype}")
    return x.shape[0], x.shape[1]


def _vector(w: torch.Tensor | None, n: int) -> None:
    if w is not None and (w.shape != (n,) or w.stride(0) != 1):
        raise ValueError(f"expected a contiguous [{n}] weight, got {tuple(w.shape)}")


def _warps(block: int) -> int:
    """About 8-16 elements per thread for the wide rows; small rows fit one warp."""
    return max(1, min(8, block // 512))


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x [T, H] (float32, float16 or bfloat16) -> x·(mean(x²) + eps)^-½ [· w] as
    functional.rms_norm (spec §1.3: Gemma 4's plain weight [H]), [T, H] contiguous in x's dtype."""
    t, n = _rows(x)
    _vector(weight, n)
    y = torch.empty((t, n), dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(n)
    runtime.launch(_rms_norm_kernel, (t,), x, x if weight is None else weight, y, n, x.stride(0), eps,
                   HAS_WEIGHT=weight is not None, BLOCK=block, num_warps=_warps(block))
    return y


def post_attention(attn: torch.Tensor, h: torch.Tensor, w_post_attn: torch.Tensor, w_ffn_norm: torch.Tensor,
                   w_pre_moe: torch.Tensor, router_scale: torch.Tensor,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the attention output to the inputs of the dense MLP, the experts and the router
    (spec §1.3; ReferenceOps.post_attention). attn, h: [T, H]; the weights [H].

    Returns (h_new, ffn_in, moe_in, router_in), each [T, H] in h's dtype:
    h_new = h + rms_norm(attn, w_post_attn); ffn_in = rms_norm(h_new, w_ffn_norm);
    moe_in = rms_norm(h_new, w_pre_moe); router_in = rms_norm(h_new, None)·router_scale·H^-½
    (the router reads the raw residual stream)."""
    t, n = _rows(h, attn)
    for w in (w_post_attn, w_ffn_norm, w_pre_moe, router_scale):
        _vector(w, n)
    outs = [torch.empty((t, n), dtype=h.dtype, device=h.device) for _ in range(4)]
    block = triton.next_power_of_2(n)
    runtime.launch(_post_attention_kernel, (t,), attn, h, w_post_attn, w_ffn_norm, w_pre_moe, router_scale,
                   *outs, n, attn.stride(0), h.stride(0), eps, n ** -0.5, BLOCK=block, num_warps=_warps(block))
    return outs[0], outs[1], outs[2], outs[3]


def head_norm_rope(x: torch.Tensor, weight: torch.Tensor | None, cos: torch.Tensor | None,
                   sin: torch.Tensor | None, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head RMSNorm [· w] then NeoX RoPE, for q, k and v (spec §1.4; ReferenceOps.head_norm_rope).

    x: [T, heads, head_dim], any strides (e.g. a view of a projection output [T, heads·head_dim]);
    weight: [head_dim] or None (V); cos, sin: [T, head_dim] or the model's [T, 1, head_dim] in the
    compute dtype, or both None (no RoPE: V). The result is rms_norm(x, weight) · cos +
    rotate_half(·) · sin, rounded the way the reference rounds it. Written to `out` when given:
    [heads, T, head_dim] (the KV cache's layout, out[h, t] = y[t, h]), any strides, x's dtype;
    returns `out`. Otherwise returns a new contiguous [T, heads, head_dim]."""
    _check_device(x)
    if x.dim() != 3 or x.shape[2] % 2:
        raise ValueError(f"expected x [T, heads, head_dim] with an even head_dim, got {tuple(x.shape)}")
    t, heads, hd = x.shape
    _vector(weight, hd)
    if (cos is None) != (sin is None):
        raise ValueError("cos and sin go together")
    if cos is not None and sin is not None:
        if cos.dim() == 3 and cos.shape[1] == 1:  # Positions.rope's broadcast layout
            cos, sin = cos.squeeze(1), sin.squeeze(1)
        if cos.shape != (t, hd) or sin.shape != (t, hd) or cos.stride() != sin.stride():
            raise ValueError(f"expected cos and sin [{t}, {hd}] with the same strides")
    if out is None:
        result = y = torch.empty((t, heads, hd), dtype=x.dtype, device=x.device)
    elif out.shape != (heads, t, hd) or out.dtype != x.dtype:
        raise ValueError(f"expected out [{heads}, {t}, {hd}] {x.dtype}, got {tuple(out.shape)} {out.dtype}")
    else:
        result, y = out, out.transpose(0, 1)
    rope = cos is not None
    half_block = triton.next_power_of_2(hd // 2)
    runtime.launch(_head_norm_rope_kernel, (t, heads), x, x if weight is None else weight,
                   cos if rope else x, sin if rope else x, y, hd // 2, *x.stride(),
                   *(cos.stride() if cos is not None else (0, 0)), *y.stride(), eps,
                   HAS_WEIGHT=weight is not None, ROPE=rope, BLOCK=half_block, num_warps=_warps(2 * half_block))
    return result


def route(logits: torch.Tensor, k: int, expert_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The router's choice after its matmul (spec §1.3; ReferenceOps.route): softmax over the
    experts in float32, the top k in descending order, renormalised to sum 1, times
    expert_scale[top_i].

    logits: float32 [T, E] (E = 128 here; one block holds a row, so E up to a few thousand);
    expert_scale: [E], float32 or the compute dtype (exact in float32, as the reference promotes
    it). Returns top_w float32 [T, k] and top_i int32 [T, k]. Equal probabilities rank the lower
    expert index first (spec §1.3's convention): torch.topk picks the same values, but on the CPU
    its order among equal values is not by index."""
    t, n = _rows(logits)
    if logits.dtype != torch.float32:
        raise ValueError(f"route takes float32 logits, not {logits.dtype}")
    _vector(expert_scale, n)
    if not 0 < k <= n:
        raise ValueError(f"cannot pick {k} of {n} experts")
    top_w = torch.empty((t, k), dtype=torch.float32, device=logits.device)
    top_i = torch.empty((t, k), dtype=torch.int32, device=logits.device)
    block = triton.next_power_of_2(n)
    runtime.launch(_route_kernel, (t,), logits, expert_scale, top_w, top_i, n, logits.stride(0),
                   K=k, BLOCK_E=block, BLOCK_K=triton.next_power_of_2(k), num_warps=_warps(block))
    return top_w, top_i


def layer_tail(residual: torch.Tensor, dense: torch.Tensor, experts: torch.Tensor, w_post1: torch.Tensor,
               w_post2: torch.Tensor, w_post: torch.Tensor, layer_scale: torch.Tensor, next_norm: torch.Tensor,
               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The end of a layer (spec §1.3; ReferenceOps.layer_tail): residual, dense, experts [T, H], weights [H],
    layer_scale a 1-element tensor (read on the device).

    h = (residual + rms_norm(rms_norm(dense, w_post1) + rms_norm(experts, w_post2), w_post))·layer_scale;
    next_in = rms_norm(h, next_norm) (the next layer's attention norm, or the output norm). Both
    [T, H] in residual's dtype."""
    t, n = _rows(residual, dense, experts)
    for w in (w_post1, w_post2, w_post, next_norm):
        _vector(w, n)
    if layer_scale.numel() != 1:
        raise ValueError(f"layer_scale has {layer_scale.numel()} elements, not 1")
    h = torch.empty((t, n), dtype=residual.dtype, device=residual.device)
    next_in = torch.empty_like(h)
    block = triton.next_power_of_2(n)
    runtime.launch(_layer_tail_kernel, (t,), residual, dense, experts, w_post1, w_post2, w_post, layer_scale,
                   next_norm, h, next_in, n, residual.stride(0), dense.stride(0), experts.stride(0), eps,
                   BLOCK=block, num_warps=_warps(block))
    return h, next_in
