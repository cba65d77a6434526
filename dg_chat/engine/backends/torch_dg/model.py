"""DiffusionGemma's forward pass in plain PyTorch (diffusiongemma-spec.md §1-2).

One transformer, two modes sharing all weights:
- encoder: causal over token ids, appends K/V to the cache (prompt prefill, canvas commit);
- decoder: the canvas attends to the cache plus the whole canvas, with no mask, and never writes
  the cache; its input embeddings are RMS-normalised and carry the self-conditioning signal.
The order of floating-point operations follows transformers' implementation, so float32 logits
agree with it to ~1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dg_chat.engine.backends.torch_dg.hparams import HParams, LayerShape
from dg_chat.engine.backends.torch_dg.weights import Weights


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


@dataclass
class LayerCache:
    """K/V of one layer for the cached positions [start, start + len)."""

    keys: torch.Tensor  # [kv_heads, len, head_dim]
    values: torch.Tensor
    start: int = 0

    @property
    def end(self) -> int:
        return self.start + self.keys.shape[1]


@dataclass(frozen=True)
class Positions:
    """Absolute positions of the tokens in a forward, with their RoPE (cos, sin) per layer kind
    (keyed by `sliding`), computed once per forward."""

    ids: torch.Tensor
    rope: dict[bool, tuple[torch.Tensor, torch.Tensor]]


@dataclass
class KVCache:
    layers: list[LayerCache] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.layers[0].end if self.layers else 0


class DiffusionGemma:
    # A sliding layer keeps this many positions beyond its window, so that the next chat turn can
    # roll the cache back over the last answer instead of re-encoding the whole conversation.
    ROLLBACK = 2048

    def __init__(self, hp: HParams, weights: Weights):
        self.hp, self.w = hp, weights
        self.device, self.dtype = weights.device, weights.dtype
        # bf16(sqrt(2816)) == 53.0: the scale is rounded to the weight dtype, as in transformers
        self.embed_scale = torch.tensor(hp.hidden ** 0.5).to(self.dtype)
        self.inv_freq = {kind: self._inv_freq(kind) for kind in {layer.sliding for layer in hp.layers}}

    def _inv_freq(self, sliding: bool) -> torch.Tensor:
        layer = next(layer for layer in self.hp.layers if layer.sliding == sliding)
        factors = None
        if not sliding and "rope_freqs.weight" in self.w.file.tensors:
            factors = self.w.get("rope_freqs.weight").float().cpu()
        return rope_inv_freq(layer.head_dim, layer.rope_base, factors).to(self.device)

    # -- building blocks ------------------------------------------------------------------

    def _positions(self, start: int, n: int) -> Positions:
        ids = torch.arange(start, start + n, device=self.device)
        rope = {}
        for sliding, inv_freq in self.inv_freq.items():
            freqs = ids[:, None].float() * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            rope[sliding] = emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :]
        return Positions(ids, rope)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.w.rows("token_embd.weight", ids) * self.embed_scale

    def _attention(self, i: int, layer: LayerShape, x: torch.Tensor, pos: Positions,
                   cache: LayerCache | None, causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention output, plus this chunk's K and V ([kv_heads, T, head_dim])."""
        p, eps, hd, t = f"blk.{i}.", self.hp.eps, layer.head_dim, x.shape[0]
        cos, sin = pos.rope[layer.sliding]
        positions = pos.ids
        q = rms_norm(F.linear(x, self.w.get(p + "attn_q.weight")).view(t, -1, hd), self.w.get(p + "attn_q_norm.weight"), eps)
        q = q * cos + rotate_half(q) * sin
        k_raw = F.linear(x, self.w.get(p + "attn_k.weight")).view(t, -1, hd)
        # full-attention layers have no v_proj: V is the raw K projection, normalised without weight
        v_raw = F.linear(x, self.w.get(p + "attn_v.weight")).view(t, -1, hd) if layer.sliding else k_raw
        k = rms_norm(k_raw, self.w.get(p + "attn_k_norm.weight"), eps)
        k = (k * cos + rotate_half(k) * sin).transpose(0, 1)
        v = rms_norm(v_raw, None, eps).transpose(0, 1)

        keys, values, mask = k, v, None
        if cache is not None and cache.keys.shape[1]:
            first = cache.start
            if layer.sliding:  # only the window's worth of the prefix is visible
                first = max(cache.start, cache.end - (self.hp.window - 1))
            keys = torch.cat((cache.keys[:, first - cache.start:], k), dim=1)
            values = torch.cat((cache.values[:, first - cache.start:], v), dim=1)
        else:
            first = int(positions[0])
        kv = keys.shape[1]
        # transformers leaves the causal mask to SDPA's is_causal when nothing precedes the chunk
        # and the window does not bite; doing the same keeps SDPA on the same kernel
        if causal and ((layer.sliding and kv >= self.hp.window) or not (t == 1 or kv == t or first == 0)):
            key_pos = torch.arange(first, first + kv, device=self.device)
            mask = key_pos[None, :] <= positions[:, None]
            if layer.sliding:
                mask &= key_pos[None, :] > positions[:, None] - self.hp.window
        out = sdpa(q.transpose(0, 1), keys, values, mask, causal=causal and mask is None)
        out = F.linear(out.transpose(0, 1).reshape(t, -1), self.w.get(p + "attn_output.weight"))
        return out, k, v

    def _moe(self, i: int, residual: torch.Tensor) -> torch.Tensor:
        p, eps, hp = f"blk.{i}.", self.hp.eps, self.hp
        # the router reads the raw residual stream, not a weighted-normed copy
        z = rms_norm(residual, None, eps) * self.w.get(p + "ffn_gate_inp.scale") * hp.hidden ** -0.5
        probs = torch.softmax(F.linear(z, self.w.get(p + "ffn_gate_inp.weight")), dim=-1, dtype=torch.float32)
        top_w, top_i = torch.topk(probs, k=hp.experts_used, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        top_w = top_w * self.w.get(p + "ffn_down_exps.scale")[top_i]

        x = rms_norm(residual, self.w.get(p + "pre_ffw_norm_2.weight"), eps)
        # Group the (token, expert) pairs by expert and run each selected expert once on its
        # rows, then sum each token's outputs over its top-k slots with one reduction: what
        # transformers' default ("grouped_mm") experts path does, so the sums round the same way.
        pairs = top_i.flatten()
        order = torch.argsort(pairs, stable=True)
        rows = x[order // hp.experts_used]
        counts = torch.bincount(pairs, minlength=hp.experts).tolist()
        outputs = torch.empty_like(rows)
        start = 0
        for e, n in enumerate(counts):
            if n:
                chunk = rows[start:start + n]
                gate, up = F.linear(chunk, self.w.expert(p + "ffn_gate_up_exps.weight", e)).chunk(2, dim=-1)
                y = F.linear(F.gelu(gate, approximate="tanh") * up, self.w.expert(p + "ffn_down_exps.weight", e))
                outputs[start:start + n] = y * top_w.flatten()[order[start:start + n], None]
                start += n
        return outputs[torch.argsort(order)].view(*top_i.shape, -1).sum(dim=1)  # [tokens, hidden]

    def _layer(self, i: int, h: torch.Tensor, pos: Positions, cache: LayerCache | None,
               encoder: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p, eps, w = f"blk.{i}.", self.hp.eps, self.w.get
        layer = self.hp.layers[i]
        attn, k, v = self._attention(i, layer, rms_norm(h, w(p + "attn_norm.weight"), eps), pos, cache, encoder)
        h = h + rms_norm(attn, w(p + "post_attention_norm.weight"), eps)

        residual = h
        dense = gelu_glu(rms_norm(residual, w(p + "ffn_norm.weight"), eps),
                         w(p + "ffn_gate.weight"), w(p + "ffn_up.weight"), w(p + "ffn_down.weight"))
        dense = rms_norm(dense, w(p + "post_ffw_norm_1.weight"), eps)
        experts = rms_norm(self._moe(i, residual), w(p + "post_ffw_norm_2.weight"), eps)
        h = residual + rms_norm(dense + experts, w(p + "post_ffw_norm.weight"), eps)
        # separate encoder / decoder scalars (numerically equal in the released checkpoint)
        return h * w(p + ("enc_layer_output_scale.weight" if encoder else "layer_output_scale.weight")), k, v

    # -- the two modes ---------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, ids: torch.Tensor, cache: KVCache, chunk: int = 4096) -> None:
        """Append `ids` to the cache (causal; sliding layers keep a window plus ROLLBACK)."""
        for begin in range(0, ids.shape[0], chunk):
            part = ids[begin:begin + chunk]
            start = cache.length
            pos = self._positions(start, part.shape[0])
            h = self._embed(part)
            for i in range(self.hp.n_layers):
                layer_cache = cache.layers[i] if i < len(cache.layers) else None
                h, k, v = self._layer(i, h, pos, layer_cache, encoder=True)
                if layer_cache is None:
                    cache.layers.append(LayerCache(k, v, start))
                else:
                    layer_cache.keys = torch.cat((layer_cache.keys, k), dim=1)
                    layer_cache.values = torch.cat((layer_cache.values, v), dim=1)
                    self._trim(i, layer_cache)

    def _trim(self, i: int, layer_cache: LayerCache) -> None:
        if self.hp.layers[i].sliding:
            drop = layer_cache.keys.shape[1] - (self.hp.window - 1 + self.ROLLBACK)
            if drop > 0:
                layer_cache.keys = layer_cache.keys[:, drop:]
                layer_cache.values = layer_cache.values[:, drop:]
                layer_cache.start += drop

    def truncate(self, cache: KVCache, length: int) -> bool:
        """Cut the cache back to its first `length` positions; False if the sliding layers no
        longer hold the window that position `length` needs (then re-encode from scratch)."""
        need = max(0, length - (self.hp.window - 1))
        for i, layer_cache in enumerate(cache.layers):
            if self.hp.layers[i].sliding and layer_cache.start > need:
                return False
        for layer_cache in cache.layers:
            keep = max(0, length - layer_cache.start)
            layer_cache.keys = layer_cache.keys[:, :keep]
            layer_cache.values = layer_cache.values[:, :keep]
        return True

    @torch.inference_mode()
    def decode(self, canvas: torch.Tensor, cache: KVCache, sc_probs: torch.Tensor | None) -> torch.Tensor:
        """Logits [canvas, vocab] in float32, soft-capped. `sc_probs` are the previous step's
        probabilities in the compute dtype (None on a block's first step: zero signal)."""
        start = cache.length
        pos = self._positions(start, canvas.shape[0])
        embed = self.w.get("token_embd.weight")
        h = self._embed(canvas)
        if sc_probs is not None:
            soft = torch.matmul(sc_probs, embed) * self.embed_scale
            sc = gelu_glu(rms_norm(soft, self.w.get("self_cond_pre_norm.weight"), self.hp.eps),
                          self.w.get("self_cond_gate.weight"), self.w.get("self_cond_up.weight"),
                          self.w.get("self_cond_down.weight"))
            h = h + sc
        # (with no signal the SC MLP outputs exactly 0, so it is skipped)
        h = rms_norm(h, None, self.hp.eps)
        for i in range(self.hp.n_layers):
            layer_cache = cache.layers[i] if i < len(cache.layers) else None
            h, _, _ = self._layer(i, h, pos, layer_cache, encoder=False)
        h = rms_norm(h, self.w.get("output_norm.weight"), self.hp.eps)
        logits = F.linear(h, embed).float()
        if self.hp.softcap:  # in place: the same arithmetic, without [canvas, vocab] temporaries
            logits.div_(self.hp.softcap).tanh_().mul_(self.hp.softcap)
        return logits
