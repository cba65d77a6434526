"""Tiny random DiffusionGemma checkpoints (transformers, the reference) and their GGUF twins."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.scripts import load_script


def hf_model(*, vocab_size: int = 512, layer_types=("sliding_attention", "full_attention"), sliding_window: int = 16,
             experts: int = 4, top_k: int = 2, canvas_length: int = 8, hidden: int = 64, seed: int = 0,
             sharpness: float = 1.0, heads: int = 4, head_dim: int = 16, expert_ff: int = 32,
             max_positions: int = 4096):
    """A DiffusionGemmaForBlockDiffusion with every weight randomised (norms, scalars and router
    scales too, so that a wrong weight in our engine shows), in float32 eval mode."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, DiffusionGemmaTextConfig
    from transformers.models.gemma4 import Gemma4VisionConfig

    text = DiffusionGemmaTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=len(layer_types),
        num_attention_heads=heads, num_key_value_heads=heads // 2, head_dim=head_dim, global_head_dim=2 * head_dim,
        num_global_key_value_heads=max(1, heads // 4), sliding_window=sliding_window, layer_types=list(layer_types),
        num_experts=experts, top_k_experts=top_k, moe_intermediate_size=expert_ff,
        max_position_embeddings=max_positions)
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas_length)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if "vision" in name or "inv_freq" in name or "embed_scale" in name:
                continue
            if tensor.ndim == 1:  # norms, scales, layer scalars: around 1
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            else:
                tensor.copy_(torch.randn_like(tensor) * (0.5 / tensor.shape[-1] ** 0.5))
        model.model.decoder.embed_tokens.weight.mul_(sharpness)
    return model


def convert(model, out_dir: Path, *, qtype: str = "f32", vocab: Path | None = None) -> Path:
    """save_pretrained + scripts/hf_to_gguf.py: the GGUF our engine loads."""
    checkpoint = out_dir / "checkpoint"
    model.save_pretrained(checkpoint)
    converter = load_script("hf_to_gguf")
    out = out_dir / f"tiny-{qtype}.gguf"
    converter.convert(checkpoint, out, vocab, converter.TYPES[qtype])
    return out


def tiny_q4_k_m(out_dir: Path, *, canvas_length: int = 8, vocab_size: int = 512) -> Path:
    """A 2-layer DiffusionGemma (sliding, then full attention) with hidden 256, so that every
    matrix can be a K-quant, stored with the published Q4_K_M type mix (Q4_K, Q5_0, Q8_0, a Q6_K
    embedding, F32 vectors) by scripts/q4_k_m_layout.py: OUT_DIR/tiny-q4_k_m.gguf."""
    model = hf_model(hidden=256, heads=4, head_dim=64, expert_ff=64, experts=8, top_k=2, vocab_size=vocab_size,
                     layer_types=("sliding_attention", "full_attention"), sliding_window=8,
                     canvas_length=canvas_length, sharpness=4.0)
    return load_script("q4_k_m_layout").write_q4_k_m(convert(model, out_dir), out_dir / "tiny-q4_k_m.gguf")
