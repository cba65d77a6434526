"""`Ops` (torch_dg/ops.py) on Triton kernels: every matrix is read as stored GGUF blocks and the
glue between the matmuls is fused, 19 launches per sliding layer (gpu-engine.md §6; 23 with
int8_activations, which quantises four GEMM inputs per layer)."""

from __future__ import annotations

import torch

from dg_chat.engine.backends.base import SelfCondition
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.kernels import fused_ops, gemm, moe
from dg_chat.engine.backends.torch_dg.kernels.gguf_tiles import INT8_TYPES, RawWeight
from dg_chat.engine.backends.torch_dg.weights import Weights

SETTLED_TAIL = {torch.bfloat16: 2.0 ** -9, torch.float16: 2.0 ** -12}
"""The mass a settled position may leave outside its candidates (`gemm.SettledRows`): half the
spacing of the compute dtype's numbers just below 1, the largest error of rounding a probability
near 1 to it."""


class TritonOps:
    def __init__(self, hp: HParams, weights: Weights, *, int8_activations: bool = False):
        self.hp, self.w = hp, weights
        self.int8_activations = int8_activations
        """W4A8 dense GEMMs (gpu-engine.md §6.2): each input of the quantised projections, MLPs and
        LM head is quantised to int8 per 32 values once (`gemm.quantize_activations`, one launch)
        and meets the weights' codes in exact int32 dots. It adds the activation quantisation
        error (~5e-3 relative per matmul, tests); `TorchBackend` turns it on for CUDA."""
        self.eps = hp.eps
        self.embed_scale = torch.tensor([hp.hidden ** 0.5], device=weights.device).to(weights.dtype).float()
        self._raw: dict[str, RawWeight] = {}
        # the per-expert scales as the routing epilogue reads them: converted once, not per step
        self._expert_scales = [weights.get(f"blk.{i}.ffn_down_exps.scale").float() for i in range(hp.n_layers)]
        tail = SETTLED_TAIL.get(weights.dtype)
        self._settled_shortcut = None if tail is None else (gemm.mean_row(self._weight("token_embd.weight")), tail)
        """(Ē, tail) of self-conditioning's shortcut for settled positions (`gemm.SettledRows`), Ē
        computed once at load: in 16-bit compute, whose own rounding is as large; None in float32,
        which stays within 1e-4 of the reference."""

    def _weight(self, name: str) -> RawWeight:
        if name not in self._raw:
            info = self.w.file.info(name)
            self._raw[name] = RawWeight(self.w.raw(name), int(info.type), info.shape[-1])
        return self._raw[name]

    def _vector(self, name: str | None) -> torch.Tensor | None:
        return None if name is None else self.w.get(name)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return gemm.embedding(ids, self._weight("token_embd.weight"), self.embed_scale, self.w.dtype)

    def soft_embed(self, self_cond: SelfCondition) -> torch.Tensor:
        lse = self_cond.lse if self_cond.lse is not None else self_cond.logits.logsumexp(dim=-1)
        # probabilities and E in the compute dtype, as the reference multiplies them (tensor cores on a GPU)
        embedding = self._weight("token_embd.weight")
        settled = None
        if self._settled_shortcut is not None and self_cond.candidates is not None:
            settled = gemm.SettledRows(self_cond.candidates, *self._settled_shortcut)
        soft = gemm.softmax_matmul(self_cond.logits, lse, embedding, operand_dtype=self.w.dtype, settled=settled)
        return (soft * self.embed_scale).to(self.w.dtype)

    def rms_norm(self, x: torch.Tensor, weight: str | None) -> torch.Tensor:
        return fused_ops.rms_norm(x, self._vector(weight), self.eps)

    def _input(self, x: torch.Tensor, *weights: RawWeight) -> torch.Tensor | gemm.Q8Activations:
        """x as the GEMMs of `weights` read it: quantised (once, for all of them) with
        int8_activations when every weight takes int8 activations."""
        if self.int8_activations and all(w.qtype in INT8_TYPES for w in weights):
            return gemm.quantize_activations(x)
        return x

    def linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return self.linears(x, [name])[0]

    def linears(self, x: torch.Tensor, names: list[str]) -> list[torch.Tensor]:
        weights = [self._weight(name) for name in names]
        a = self._input(x, *weights)
        return [gemm.linear(a, w) for w in weights]

    def mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        gate, up, down = (self._weight(f"{prefix}_{name}.weight") for name in ("gate", "up", "down"))
        hidden = gemm.linear_glu(self._input(x, gate, up), gate, up)
        return gemm.linear(self._input(hidden, down), down)

    def head_norm_rope(self, x: torch.Tensor, weight: str | None, rope: tuple[torch.Tensor, torch.Tensor] | None,
                       out: torch.Tensor | None = None) -> torch.Tensor:
        cos, sin = rope if rope is not None else (None, None)
        if out is None:
            out = torch.empty(x.shape[1], x.shape[0], x.shape[2], dtype=x.dtype, device=x.device)
        return fused_ops.head_norm_rope(x, self._vector(weight), cos, sin, self.eps, out=out)

    def post_attention(self, attn: torch.Tensor, h: torch.Tensor, i: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p, w = f"blk.{i}.", self.w.get
        return fused_ops.post_attention(attn, h, w(p + "post_attention_norm.weight"), w(p + "ffn_norm.weight"),
                                        w(p + "pre_ffw_norm_2.weight"), w(p + "ffn_gate_inp.scale"), self.eps)

    def route(self, router_in: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = f"blk.{i}."
        logits = gemm.linear(router_in, self._weight(p + "ffn_gate_inp.weight"), out_dtype=torch.float32)
        return fused_ops.route(logits, self.hp.experts_used, self._expert_scales[i])

    def experts(self, x: torch.Tensor, i: int, top_w: torch.Tensor, top_i: torch.Tensor) -> torch.Tensor:
        p = f"blk.{i}."
        return moe.experts(x, self._weight(p + "ffn_gate_up_exps.weight"), self._weight(p + "ffn_down_exps.weight"),
                           top_i, top_w)

    def layer_tail(self, residual: torch.Tensor, dense: torch.Tensor, experts: torch.Tensor, i: int,
                   encoder: bool, next_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        p, w = f"blk.{i}.", self.w.get
        scale = w(p + ("enc_layer_output_scale.weight" if encoder else "layer_output_scale.weight"))
        return fused_ops.layer_tail(residual, dense, experts, w(p + "post_ffw_norm_1.weight"),
                                    w(p + "post_ffw_norm_2.weight"), w(p + "post_ffw_norm.weight"), scale,
                                    w(next_norm), self.eps)

    def lm_head(self, h: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        w = self._weight("token_embd.weight")
        return gemm.linear(self._input(h, w), w, softcap=self.hp.softcap, out_dtype=torch.float32, out=out)
