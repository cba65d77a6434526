"""DiffusionGemma's forward pass (diffusiongemma-spec.md §1-2): the only one, for both paths.

One transformer, two modes sharing all weights:
- encoder: causal over token ids, appends K/V to the cache (prompt prefill, canvas commit);
- decoder: the canvas attends to the cache plus the whole canvas, with no mask, and never writes
  the cache; its input embeddings are RMS-normalised and carry the self-conditioning signal.
What touches a weight goes through `self.ops` (reference torch or Triton kernels, ops.py) and
what reads the cache through the cache object (cache.py). With the reference ops and the growing
cache the order of floating-point operations is transformers', so float32 logits agree with it
to ~1e-6; the static cache and Triton ops make a decoder step free of host synchronisation.
"""

from __future__ import annotations

import torch

from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.cache import KVCache, Positions
from dg_chat.engine.backends.torch_dg.functional import rope_inv_freq
from dg_chat.engine.backends.torch_dg.hparams import HParams, LayerShape
from dg_chat.engine.backends.torch_dg.ops import Ops
from dg_chat.engine.backends.torch_dg.weights import Weights


class DiffusionGemma:
    def __init__(self, hp: HParams, weights: Weights, ops: Ops):
        self.hp, self.w, self.ops = hp, weights, ops
        self.device, self.dtype = weights.device, weights.dtype
        self.inv_freq = {kind: self._inv_freq(kind) for kind in {layer.sliding for layer in hp.layers}}

    def _inv_freq(self, sliding: bool) -> torch.Tensor:
        layer = next(layer for layer in self.hp.layers if layer.sliding == sliding)
        factors = None
        if not sliding and "rope_freqs.weight" in self.w.file.tensors:
            factors = self.w.get("rope_freqs.weight").float().cpu()
        return rope_inv_freq(layer.head_dim, layer.rope_base, factors).to(self.device)

    def _positions(self, start: int | torch.Tensor, n: int) -> Positions:
        ids = torch.arange(n, device=self.device) + start
        rope = {}
        for sliding, inv_freq in self.inv_freq.items():
            freqs = ids[:, None].float() * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            rope[sliding] = emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :]
        return Positions(start, ids, rope)

    def _attention(self, i: int, layer: LayerShape, x: torch.Tensor, pos: Positions, cache: KVCache,
                   encoder: bool) -> torch.Tensor:
        ops, p, t, hd = self.ops, f"blk.{i}.", x.shape[0], layer.head_dim
        rope = pos.rope[layer.sliding]
        # a static decoder step writes its K/V straight into the cache's scratch slots
        k_out, v_out = (None, None) if encoder else cache.scratch(i)
        # full-attention layers have no v_proj: V is the raw K projection, normalised without weight
        names = ["attn_q", "attn_k", "attn_v"] if layer.sliding else ["attn_q", "attn_k"]
        q_raw, k_raw, *v_raw = (y.view(t, -1, hd) for y in ops.linears(x, [f"{p}{n}.weight" for n in names]))
        q = ops.head_norm_rope(q_raw, p + "attn_q_norm.weight", rope)
        k = ops.head_norm_rope(k_raw, p + "attn_k_norm.weight", rope, k_out)
        v = ops.head_norm_rope(v_raw[0] if v_raw else k_raw, None, None, v_out)
        out = cache.attend(i, layer, q, k, v, pos, encoder)
        return ops.linear(out.transpose(0, 1).reshape(t, -1), p + "attn_output.weight")

    def _layer(self, i: int, h: torch.Tensor, x: torch.Tensor, pos: Positions, cache: KVCache, encoder: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i on the residual stream h and its attention input x = rms_norm(h, attn_norm):
        (h', the next norm of h': layer i + 1's attention norm, after the last layer the output
        norm), the norm computed with the layer's tail (one kernel on the fast path)."""
        ops, p = self.ops, f"blk.{i}."
        attn = self._attention(i, self.hp.layers[i], x, pos, cache, encoder)
        h, ffn_in, moe_in, router_in = ops.post_attention(attn, h, i)
        dense = ops.mlp(ffn_in, p + "ffn")
        top_w, top_i = ops.route(router_in, i)
        next_norm = f"blk.{i + 1}.attn_norm.weight" if i + 1 < self.hp.n_layers else "output_norm.weight"
        return ops.layer_tail(h, dense, ops.experts(moe_in, i, top_w, top_i), i, encoder, next_norm)

    def _layers(self, h: torch.Tensor, pos: Positions, cache: KVCache, encoder: bool) -> torch.Tensor:
        """The layer stack on the input embeddings h [T, hidden] -> rms_norm(h_out, output_norm)
        [T, hidden] (the LM head's input; the encoder only fills the cache and drops it)."""
        x = self.ops.rms_norm(h, "blk.0.attn_norm.weight")
        for i in range(self.hp.n_layers):
            h, x = self._layer(i, h, x, pos, cache, encoder)
        return x

    # -- the two modes ---------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, ids: torch.Tensor, cache: KVCache) -> None:
        """Append `ids` (int64 [n]) to the cache, causally, in chunks of the cache's size."""
        cache.reserve(ids.shape[0])
        for begin in range(0, ids.shape[0], cache.encode_chunk):
            part = ids[begin:begin + cache.encode_chunk]
            pos = self._positions(cache.length, part.shape[0])
            self._layers(self.ops.embed(part), pos, cache, encoder=True)
            cache.advance(part.shape[0])

    @torch.inference_mode()
    def decode(self, canvas: torch.Tensor, cache: KVCache, self_cond: SelfCondition | None,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [canvas, vocab] in float32, soft-capped, for int64 `canvas` [C] right after the
        cache (written into `out` when given; it may be `self_cond.logits`, read before it is
        overwritten). `self_cond` is the previous step's output (None on a block's first step:
        zero signal). With a static cache nothing here reads a value back to the host."""
        ops = self.ops
        cache.begin_decode()
        pos = self._positions(cache.decode_start, canvas.shape[0])
        h = ops.embed(canvas)
        if self_cond is not None:
            h = h + ops.mlp(ops.rms_norm(ops.soft_embed(self_cond), "self_cond_pre_norm.weight"), "self_cond")
        # (with no signal the SC MLP outputs exactly 0, so it is skipped)
        h = ops.rms_norm(h, None)
        return ops.lm_head(self._layers(h, pos, cache, encoder=False), out)
