#!/usr/bin/env python3
"""Convert a transformers DiffusionGemma checkpoint to GGUF in the published layout.

    scripts/hf_to_gguf.py MODEL_DIR OUT.gguf [--vocab VOCAB.gguf] [--type f32|f16|bf16|q8_0]

MODEL_DIR holds config.json (+ generation_config.json) and model*.safetensors, as written by
`save_pretrained`. The output has architecture `diffusion-gemma`, the KV keys and tensor names of
the unsloth GGUFs (diffusiongemma-spec.md §5), the sampler defaults as `diffusion.eb_*` keys when
the generation config has them, and the tokenizer metadata of VOCAB.gguf (e.g. llama.cpp's real
Gemma 4 vocabulary, so that a tiny model tokenizes like the real one). Vision weights are dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFValueType as V
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dg_chat.gguf.reader import open_gguf

ARCH = "diffusion-gemma"
TYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0}
FILE_TYPES = {Q.F32: 0, Q.F16: 1, Q.Q8_0: 7, Q.BF16: 32}  # llama_ftype values

# HF name (after "model.decoder.") -> GGUF name, per layer and global.
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm_1.weight": "post_ffw_norm_1.weight",
    "router.proj.weight": "ffn_gate_inp.weight",
    "router.scale": "ffn_gate_inp.scale",
    "pre_feedforward_layernorm_2.weight": "pre_ffw_norm_2.weight",
    "experts.gate_up_proj": "ffn_gate_up_exps.weight",
    "experts.down_proj": "ffn_down_exps.weight",
    "router.per_expert_scale": "ffn_down_exps.scale",
    "post_feedforward_layernorm_2.weight": "post_ffw_norm_2.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "layer_scalar": "layer_output_scale.weight",
}
GLOBAL_TENSORS = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "self_conditioning.pre_norm.weight": "self_cond_pre_norm.weight",
    "self_conditioning.gate_proj.weight": "self_cond_gate.weight",
    "self_conditioning.up_proj.weight": "self_cond_up.weight",
    "self_conditioning.down_proj.weight": "self_cond_down.weight",
}
# Kept in float32 whatever --type says, as in the published quants.
F32_ALWAYS = ("ffn_gate_inp.weight",)

SAMPLER_KEYS = {  # generation_config.json -> GGUF (llama.cpp PR #24423 converter names)
    "max_denoising_steps": ("diffusion.eb_max_steps", V.UINT32),
    "t_min": ("diffusion.eb_t_min", V.FLOAT32),
    "t_max": ("diffusion.eb_t_max", V.FLOAT32),
    "stability_threshold": ("diffusion.eb_stability_threshold", V.UINT32),
    "confidence_threshold": ("diffusion.eb_confidence_threshold", V.FLOAT32),
}


def load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """The text weights as float32 numpy arrays, keyed by their HF names."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"no *.safetensors in {model_dir}")
    weights = {}
    for file in files:
        with safe_open(file, "pt") as f:
            for name in f.keys():
                if name.startswith(("model.decoder.", "model.encoder.language_model.")):
                    weights[name] = f.get_tensor(name).float().numpy()
    return weights


def rope_freq_factors(head_dim: int, partial_rotary_factor: float) -> np.ndarray:
    """Proportional RoPE as frequency divisors: 1 on the rotated pairs, 1e30 (no rotation) after."""
    rotated = int(partial_rotary_factor * head_dim // 2)
    factors = np.full(head_dim // 2, 1e30, dtype=np.float32)
    factors[:rotated] = 1.0
    return factors


def write_metadata(w: gguf.GGUFWriter, cfg: dict, text: dict, gen: dict, qtype: Q) -> tuple[int, float]:
    """Write the model KVs; return (full-attention head_dim, its partial rotary factor)."""
    n_layers = text["num_hidden_layers"]
    layer_types = text.get("layer_types") or [
        "full_attention" if (i + 1) % 6 == 0 or i == n_layers - 1 else "sliding_attention" for i in range(n_layers)]
    sliding = [t == "sliding_attention" for t in layer_types]
    per_layer = {int(k): v for k, v in (text.get("per_layer_config") or {}).items()}
    kv_heads = [per_layer.get(i, {}).get("num_key_value_heads", text["num_key_value_heads"]) for i in range(n_layers)]
    full = next((i for i, s in enumerate(sliding) if not s), None)
    global_head_dim = (per_layer.get(full, {}).get("head_dim", text["head_dim"]) if full is not None
                       else text["head_dim"])
    rope = text.get("rope_parameters") or {}
    full_rope = rope.get("full_attention", {"rope_theta": 1e6})
    swa_rope = rope.get("sliding_attention", {"rope_theta": 1e4})

    def key(name: str, value, vtype: V, sub_type: V | None = None) -> None:
        w.add_key_value(name, value, vtype, sub_type)

    a = ARCH
    w.add_name(cfg.get("_name_or_path") or "DiffusionGemma")
    key("general.file_type", FILE_TYPES[qtype], V.UINT32)
    for name, value in {
        "block_count": n_layers, "context_length": text["max_position_embeddings"],
        "embedding_length": text["hidden_size"], "feed_forward_length": text["intermediate_size"],
        "attention.head_count": text["num_attention_heads"], "expert_count": text["num_experts"],
        "expert_used_count": text["top_k_experts"], "expert_feed_forward_length": text["moe_intermediate_size"],
        "attention.key_length": global_head_dim, "attention.value_length": global_head_dim,
        "attention.key_length_swa": text["head_dim"], "attention.value_length_swa": text["head_dim"],
        "rope.dimension_count": global_head_dim, "rope.dimension_count_swa": text["head_dim"],
        "attention.sliding_window": text["sliding_window"], "attention.shared_kv_layers": 0,
        "embedding_length_per_layer_input": 0,
    }.items():
        key(f"{a}.{name}", value, V.UINT32)
    key(f"{a}.attention.head_count_kv", kv_heads, V.ARRAY, V.INT32)
    key(f"{a}.attention.sliding_window_pattern", sliding, V.ARRAY, V.BOOL)
    key(f"{a}.rope.freq_base", float(full_rope["rope_theta"]), V.FLOAT32)
    key(f"{a}.rope.freq_base_swa", float(swa_rope["rope_theta"]), V.FLOAT32)
    key(f"{a}.attention.layer_norm_rms_epsilon", float(text["rms_norm_eps"]), V.FLOAT32)
    key(f"{a}.final_logit_softcapping", float(text.get("final_logit_softcapping") or 30.0), V.FLOAT32)
    key(f"{a}.attention.causal", False, V.BOOL)
    key("diffusion.canvas_length", cfg["canvas_length"], V.UINT32)

    for hf_key, (gguf_key, vtype) in SAMPLER_KEYS.items():
        if gen.get(hf_key) is not None:
            key(gguf_key, gen[hf_key], vtype)
    bound = (gen.get("sampler_config") or {}).get("entropy_bound")
    if bound is not None:
        key("diffusion.eb_entropy_bound", float(bound), V.FLOAT32)
    return global_head_dim, float(full_rope.get("partial_rotary_factor", 1.0))


def write_kvs(w: gguf.GGUFWriter, metadata: dict) -> None:
    """KVs in the form `dg_chat.gguf.reader` returns them (lists of str, numpy arrays, scalars)."""
    for name, value in metadata.items():
        if isinstance(value, np.ndarray):
            sub = {"f": V.FLOAT32, "i": V.INT32, "u": V.UINT32, "b": V.BOOL}[value.dtype.kind]
            w.add_key_value(name, value.tolist(), V.ARRAY, sub)
        elif isinstance(value, list):
            w.add_key_value(name, value, V.ARRAY, V.STRING)
        elif isinstance(value, bool):
            w.add_bool(name, value)
        elif isinstance(value, int):
            w.add_uint32(name, value)
        elif isinstance(value, float):
            w.add_float32(name, value)
        else:
            w.add_string(name, value)


def copy_tokenizer(w: gguf.GGUFWriter, vocab_path: Path, vocab_size: int) -> None:
    with open_gguf(vocab_path) as vocab:
        tokens = vocab.get("tokenizer.ggml.tokens") or []
        if len(tokens) > vocab_size:
            raise SystemExit(f"{vocab_path} has {len(tokens)} tokens but the model's vocab_size is {vocab_size}")
        write_kvs(w, {name: value for name, value in vocab.metadata.items() if name.startswith("tokenizer.")})


def encode(array: np.ndarray, name: str, qtype: Q) -> tuple[np.ndarray, Q]:
    """The tensor in its storage type: 1-D tensors and the router stay float32."""
    if array.ndim < 2 or name.endswith(F32_ALWAYS) or qtype == Q.F32:
        return array.astype(np.float32), Q.F32
    if qtype == Q.F16:
        return array.astype(np.float16), Q.F16
    if qtype == Q.Q8_0 and array.shape[-1] % 32:
        return array.astype(np.float16), Q.F16  # rows that do not fill Q8_0 blocks, as llama.cpp does
    return gguf.quants.quantize(array, qtype), qtype


def convert(model_dir: Path, out: Path, vocab: Path | None, qtype: Q, metadata: dict | None = None) -> None:
    """`metadata`: extra KVs written as they are (e.g. a trained tokenizer's `bpe_metadata`)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    text = cfg["text_config"]
    gen_path = model_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    weights = load_weights(model_dir)

    w = gguf.GGUFWriter(str(out), ARCH)
    global_head_dim, partial = write_metadata(w, cfg, text, gen, qtype)
    if vocab:
        copy_tokenizer(w, vocab, text["vocab_size"])
    write_kvs(w, metadata or {})

    tensors: dict[str, np.ndarray] = {"rope_freqs.weight": rope_freq_factors(global_head_dim, partial)}
    for hf_name, gguf_name in GLOBAL_TENSORS.items():
        tensors[gguf_name] = weights[f"model.decoder.{hf_name}"]
    for i in range(text["num_hidden_layers"]):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            source = weights.get(f"model.decoder.layers.{i}.{hf_name}")
            if source is not None:  # v_proj is absent on full-attention layers
                tensors[f"blk.{i}.{gguf_name}"] = source
        scalar = weights[f"model.encoder.language_model.layers.{i}.layer_scalar"]
        tensors[f"blk.{i}.enc_layer_output_scale.weight"] = scalar
    for name, array in tensors.items():
        data, storage = encode(array, name, qtype)
        w.add_tensor(name, data, raw_dtype=storage)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=Path, help="GGUF whose tokenizer.* metadata to copy")
    parser.add_argument("--type", choices=TYPES, default="f32", help="storage type of the weight matrices")
    args = parser.parse_args(argv)
    convert(args.model_dir, args.out, args.vocab, TYPES[args.type])
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
