"""DiffusionGemma hyper-parameters, read from a GGUF's metadata and checked against its tensors."""

from __future__ import annotations

from dataclasses import dataclass

from dg_chat.gguf.reader import GGUFError, GGUFFile

ARCH = "diffusion-gemma"


@dataclass(frozen=True)
class LayerShape:
    sliding: bool
    head_dim: int
    kv_heads: int
    rope_base: float


@dataclass(frozen=True)
class HParams:
    n_layers: int
    hidden: int
    ff: int
    """Dense MLP and self-conditioning MLP width."""
    heads: int
    layers: tuple[LayerShape, ...]
    window: int
    """Sliding window: a sliding layer sees at most the last `window` positions (itself included)."""
    eps: float
    experts: int
    experts_used: int
    expert_ff: int
    softcap: float
    canvas_length: int
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> HParams:
        if f.architecture != ARCH:
            raise GGUFError(f"{f.path}: architecture '{f.architecture}' is not {ARCH}")

        def need(key: str, full_key: bool = False):
            name = key if full_key else f"{ARCH}.{key}"
            if name not in f.metadata:
                raise GGUFError(f"{f.path}: metadata key '{name}' is missing")
            return f.metadata[name]

        n_layers = int(need("block_count"))
        pattern = [bool(x) for x in need("attention.sliding_window_pattern")]
        kv_heads = need("attention.head_count_kv")
        kv_heads = [int(x) for x in kv_heads] if hasattr(kv_heads, "__len__") else [int(kv_heads)] * n_layers
        if len(pattern) != n_layers or len(kv_heads) != n_layers:
            raise GGUFError(f"{f.path}: per-layer metadata does not have {n_layers} entries")
        layers = tuple(
            LayerShape(
                sliding=pattern[i],
                head_dim=int(need("attention.key_length_swa" if pattern[i] else "attention.key_length")),
                kv_heads=kv_heads[i],
                rope_base=float(need("rope.freq_base_swa" if pattern[i] else "rope.freq_base")),
            )
            for i in range(n_layers)
        )
        return cls(
            n_layers=n_layers,
            hidden=int(need("embedding_length")),
            ff=int(need("feed_forward_length")),
            heads=int(need("attention.head_count")),
            layers=layers,
            window=int(need("attention.sliding_window")),
            eps=float(need("attention.layer_norm_rms_epsilon")),
            experts=int(need("expert_count")),
            experts_used=int(need("expert_used_count")),
            expert_ff=int(need("expert_feed_forward_length")),
            softcap=float(f.metadata.get(f"{ARCH}.final_logit_softcapping", 0.0)),
            canvas_length=int(need("diffusion.canvas_length", full_key=True)),
            context_length=int(need("context_length")),
            vocab_size=f.info("token_embd.weight").shape[0],
        )

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the model needs, with its numpy-order shape."""
        h, ff, e, eff = self.hidden, self.ff, self.experts, self.expert_ff
        shapes: dict[str, tuple[int, ...]] = {
            "token_embd.weight": (self.vocab_size, h),
            "output_norm.weight": (h,),
            "self_cond_pre_norm.weight": (h,),
            "self_cond_gate.weight": (ff, h),
            "self_cond_up.weight": (ff, h),
            "self_cond_down.weight": (h, ff),
        }
        full = [layer for layer in self.layers if not layer.sliding]
        if full:
            shapes["rope_freqs.weight"] = (full[0].head_dim // 2,)
        for i, layer in enumerate(self.layers):
            q, kv = self.heads * layer.head_dim, layer.kv_heads * layer.head_dim
            block = {
                "attn_norm.weight": (h,), "attn_q.weight": (q, h), "attn_k.weight": (kv, h),
                "attn_q_norm.weight": (layer.head_dim,), "attn_k_norm.weight": (layer.head_dim,),
                "attn_output.weight": (h, q), "post_attention_norm.weight": (h,), "ffn_norm.weight": (h,),
                "ffn_gate.weight": (ff, h), "ffn_up.weight": (ff, h), "ffn_down.weight": (h, ff),
                "post_ffw_norm_1.weight": (h,), "ffn_gate_inp.weight": (e, h), "ffn_gate_inp.scale": (h,),
                "pre_ffw_norm_2.weight": (h,), "ffn_gate_up_exps.weight": (e, 2 * eff, h),
                "ffn_down_exps.weight": (e, h, eff), "ffn_down_exps.scale": (e,),
                "post_ffw_norm_2.weight": (h,), "post_ffw_norm.weight": (h,),
                "layer_output_scale.weight": (1,), "enc_layer_output_scale.weight": (1,),
            }
            if layer.sliding:
                block["attn_v.weight"] = (kv, h)
            shapes.update({f"blk.{i}.{name}": shape for name, shape in block.items()})
        return shapes

    def check_tensors(self, f: GGUFFile) -> None:
        """One-line GGUFError naming the first missing or misshapen tensor."""
        for name, shape in self.expected_shapes().items():
            info = f.info(name)
            if tuple(info.shape) != shape:
                raise GGUFError(f"{f.path}: tensor '{name}' has shape {tuple(info.shape)}, expected {shape}")
