"""DiffusionGemma hyper-parameters, read from a GGUF's metadata and checked against its tensors."""

from __future__ import annotations

from dataclasses import dataclass

from dg_chat.gguf.architectures import DIFFUSION_GEMMA
from dg_chat.gguf.checks import check_token_ids, meta_flags, meta_float, meta_int, meta_ints
from dg_chat.gguf.reader import GGUFError, GGUFFile

ARCH = DIFFUSION_GEMMA


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
        """Every key the engine reads, type- and range-checked (one-line GGUFError naming file and key)."""
        if f.architecture != ARCH:
            raise GGUFError(f"{f.path}: architecture '{f.architecture}' is not {ARCH}")

        def key(name: str) -> str:
            return f"{ARCH}.{name}"

        n_layers = meta_int(f, key("block_count"))
        pattern = meta_flags(f, key("attention.sliding_window_pattern"), n_layers)
        heads = meta_int(f, key("attention.head_count"))
        kv_heads = meta_ints(f, key("attention.head_count_kv"), n_layers)
        if any(heads % n for n in kv_heads):
            raise GGUFError(f"{f.path}: metadata '{key('attention.head_count_kv')}' is {kv_heads}, expected "
                            f"divisors of the {heads} attention heads")
        head_dims = {sliding: meta_int(f, key("attention.key_length_swa" if sliding else "attention.key_length"))
                     for sliding in set(pattern)}
        rope_bases = {sliding: meta_float(f, key("rope.freq_base_swa" if sliding else "rope.freq_base"))
                      for sliding in set(pattern)}
        layers = tuple(LayerShape(sliding, head_dims[sliding], kv_heads[i], rope_bases[sliding])
                       for i, sliding in enumerate(pattern))
        context_length = meta_int(f, key("context_length"))
        experts = meta_int(f, key("expert_count"))
        embedding = f.info("token_embd.weight").shape
        if len(embedding) != 2:
            raise GGUFError(f"{f.path}: tensor 'token_embd.weight' has shape {embedding}, expected 2 dimensions "
                            "(vocabulary, hidden)")
        hp = cls(
            n_layers=n_layers,
            hidden=meta_int(f, key("embedding_length")),
            ff=meta_int(f, key("feed_forward_length")),
            heads=heads,
            layers=layers,
            window=meta_int(f, key("attention.sliding_window"), maximum=context_length),
            eps=meta_float(f, key("attention.layer_norm_rms_epsilon")),
            experts=experts,
            experts_used=meta_int(f, key("expert_used_count"), maximum=experts),
            expert_ff=meta_int(f, key("expert_feed_forward_length")),
            softcap=meta_float(f, key("final_logit_softcapping"), positive=False, default=0.0),
            canvas_length=meta_int(f, "diffusion.canvas_length", maximum=context_length),
            context_length=context_length,
            vocab_size=embedding[0],
        )
        tokens = f.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list) and tokens:  # the engine needs none, but an id outside them would break a turn
            if len(tokens) > hp.vocab_size:
                raise GGUFError(f"{f.path}: tensor 'token_embd.weight' has {hp.vocab_size:,} rows, fewer than the "
                                f"{len(tokens):,} tokens of 'tokenizer.ggml.tokens'")
            check_token_ids(f, len(tokens))
        return hp

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
