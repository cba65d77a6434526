"""The swap points of the forward pass: `model.py` is the only forward and calls an ops object
for everything that touches a weight or that the fast path fuses.

`ReferenceOps` is plain torch: weights dequantised when used, `F.linear`, the expert loop; the
order of operations is transformers' own, so float32 results match it (the oracle of every
test). `kernels.triton_ops.TritonOps` runs the same operations as Triton kernels on the raw
GGUF blocks.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.functional import gelu_glu, rms_norm, rotate_half
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.weights import Weights


class Ops(Protocol):
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Scaled token embeddings [T, hidden] for int64 ids [T]."""
        ...

    def soft_embed(self, self_cond: SelfCondition) -> torch.Tensor:
        """Self-conditioning input: softmax(processed logits) @ E, scaled [C, hidden] (spec §2)."""
        ...

    def rms_norm(self, x: torch.Tensor, weight: str | None) -> torch.Tensor:
        ...

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x [T, K] @ Wᵀ -> [T, N]."""
        ...

    def linears(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        """[x @ Wᵀ for each W in `names`]: projections of one input (which the fast path may
        prepare once for all of them)."""
        ...

    def mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """down(gelu_tanh(gate(x)) * up(x)) with the tensors `{prefix}_gate/up/down.weight`."""
        ...

    def head_norm_rope(self, x: torch.Tensor, weight: str | None, rope: tuple[torch.Tensor, torch.Tensor] | None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head RMSNorm [and RoPE] of x [T, heads, head_dim] -> [heads, T, head_dim] (into `out`)."""
        ...

    def post_attention(self, attn: torch.Tensor, h: torch.Tensor, i: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h + norm(attn), the dense MLP's input, the experts' input, the router's input)."""
        ...

    def route(self, router_in: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights float32 [T, k], expert ids [T, k]) of layer i's router (spec §1.3)."""
        ...

    def experts(self, x: torch.Tensor, i: int, top_w: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        """Σ_k top_w · expert_k(x) -> [T, hidden]."""
        ...

    def layer_tail(self, residual: torch.Tensor, dense: torch.Tensor, experts: torch.Tensor, i: int,
                   encoder: bool, next_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, rms_norm(h, next_norm)): the layer's output h = residual + norm(norm(dense) +
        norm(experts)), times the layer scalar, and its next norm (the next layer's input)."""
        ...

    def lm_head(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Soft-capped float32 logits [T, vocab] of the final hidden states (tied embedding),
        written into `out` when given."""
        ...


class ReferenceOps:
    def __init__(self, hp: HParams, weights: Weights):
        self.hp, self.w = hp, weights
        # bf16(sqrt(2816)) == 53.0: the scale is rounded to the weight dtype, as in transformers
        self.embed_scale = torch.tensor(hp.hidden ** 0.5).to(weights.dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.w.rows("token_embd.weight", ids) * self.embed_scale

    def soft_embed(self, self_cond: SelfCondition) -> torch.Tensor:
        dtype = self.w.dtype
        if dtype == torch.float32 and self_cond.probs is not None:
            probs = self_cond.probs  # bit-identical to softmax(logits) recomputed from float32
        else:  # transformers rounds the logits to the embedding dtype before the softmax
            probs = torch.softmax(self_cond.logits.to(dtype), dim=-1, dtype=torch.float32)
        return torch.matmul(probs.to(dtype), self.w.get("token_embd.weight")) * self.embed_scale

    def rms_norm(self, x: torch.Tensor, weight: str | None) -> torch.Tensor:
        return rms_norm(x, None if weight is None else self.w.get(weight), self.hp.eps)

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w.get(name))

    def linears(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        return [self.linear(x, name) for name in names]

    def mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        w = self.w.get
        return gelu_glu(x, w(f"{prefix}_gate.weight"), w(f"{prefix}_up.weight"), w(f"{prefix}_down.weight"))

    def head_norm_rope(self, x: torch.Tensor, weight: str | None, rope: tuple[torch.Tensor, torch.Tensor] | None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
        x = self.rms_norm(x, weight)
        if rope is not None:
            cos, sin = rope
            x = x * cos + rotate_half(x) * sin
        x = x.transpose(0, 1)
        return x if out is None else out.copy_(x)

    def post_attention(self, attn: torch.Tensor, h: torch.Tensor, i: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p = f"blk.{i}."
        h = h + self.rms_norm(attn, p + "post_attention_norm.weight")
        # the router reads the raw residual stream, not a weighted-normed copy
        router_in = rms_norm(h, None, self.hp.eps) * self.w.get(p + "ffn_gate_inp.scale") * self.hp.hidden ** -0.5
        return h, self.rms_norm(h, p + "ffn_norm.weight"), self.rms_norm(h, p + "pre_ffw_norm_2.weight"), router_in

    def route(self, router_in: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = f"blk.{i}."
        probs = torch.softmax(self.linear(router_in, p + "ffn_gate_inp.weight"), dim=-1, dtype=torch.float32)
        top_w, top_i = torch.topk(probs, k=self.hp.experts_used, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return top_w * self.w.get(p + "ffn_down_exps.scale")[top_i], top_i

    def experts(self, x: torch.Tensor, i: int, top_w: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        p, k = f"blk.{i}.", self.hp.experts_used
        # Group the (token, expert) pairs by expert and run each selected expert once on its
        # rows, then sum each token's outputs over its top-k slots with one reduction: what
        # transformers' default ("grouped_mm") experts path does, so the sums round the same way.
        pairs = top_i.flatten()
        order = torch.argsort(pairs, stable=True)
        rows = x[order // k]
        counts = torch.bincount(pairs, minlength=self.hp.experts).tolist()
        outputs = torch.empty_like(rows)
        start = 0
        for e, n in enumerate(counts):
            if n:
                chunk = rows[start:start + n]
                gate, up = F.linear(chunk, self.w.expert(p + "ffn_gate_up_exps.weight", e)).chunk(2, dim=-1)
                y = F.linear(F.gelu(gate, approximate="tanh") * up, self.w.expert(p + "ffn_down_exps.weight", e))
                outputs[start:start + n] = y * top_w.flatten()[order[start:start + n], None]
                start += n
        return outputs[torch.argsort(order)].view(*top_i.shape, -1).sum(dim=1)

    def layer_tail(self, residual: torch.Tensor, dense: torch.Tensor, experts: torch.Tensor, i: int,
                   encoder: bool, next_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        p = f"blk.{i}."
        dense = self.rms_norm(dense, p + "post_ffw_norm_1.weight")
        experts = self.rms_norm(experts, p + "post_ffw_norm_2.weight")
        h = residual + self.rms_norm(dense + experts, p + "post_ffw_norm.weight")
        # separate encoder / decoder scalars (numerically equal in the released checkpoint)
        h = h * self.w.get(p + ("enc_layer_output_scale.weight" if encoder else "layer_output_scale.weight"))
        return h, self.rms_norm(h, next_norm)

    def lm_head(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        logits = F.linear(h, self.w.get("token_embd.weight")).float()
        if self.hp.softcap:  # in place: the same arithmetic, without [canvas, vocab] temporaries
            logits.div_(self.hp.softcap).tanh_().mul_(self.hp.softcap)
        return logits if out is None else out.copy_(logits)
