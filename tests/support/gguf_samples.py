"""Small GGUF files and quantized blocks for the GGUF tests (and the dequant benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter, quants
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q, GGUFValueType, LlamaFileType

# Types gguf.quants can quantize: samples are quantized random floats.
QUANTIZABLE = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1)
# K-quants have no quantizer in gguf.quants: samples are random bytes with the fp16 super-block
# scales (at these byte offsets) forced to small finite values, so that every value is finite.
K_SCALE_OFFSETS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def quantized(qtype: Q, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Valid data of `qtype` for a tensor of numpy `shape`, as uint8 rows ([..., bytes per row])."""
    if qtype in QUANTIZABLE:
        return quants.quantize(rng.standard_normal(shape, dtype=np.float32), qtype).view(np.uint8)
    block, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, (*shape[:-1], shape[-1] // block, type_size), dtype=np.uint8)
    for offset in K_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(-1e-2, 1e-2, blocks.shape[:-1] + (1,)).astype(np.float16)
        blocks[..., offset:offset + 2] = scales.view(np.uint8)
    return blocks.reshape(*shape[:-1], -1)


# name -> (type, numpy shape) of the tensors in the sample model; the 3-D one is a MoE expert tensor.
SAMPLE_TENSORS: dict[str, tuple[Q, tuple[int, ...]]] = {
    "token_embd.weight": (Q.Q8_0, (16, 64)),
    "output_norm.weight": (Q.F32, (64,)),
    "blk.0.attn_q.weight": (Q.F16, (32, 64)),
    "blk.0.attn_k.weight": (Q.BF16, (16, 64)),
    "blk.0.attn_v.weight": (Q.Q4_0, (16, 64)),
    "blk.0.ffn_gate_up_exps.weight": (Q.Q4_K, (4, 8, 256)),
    "blk.0.ffn_down_exps.weight": (Q.Q6_K, (4, 4, 256)),
}
TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "a", "b", "ab"]


def write_sample(path: Path, *, arch: str = "diffusion-gemma", name: str = "Tiny DiffusionGemma",
                 canvas_length: int | None = 8,
                 tensors: dict[str, tuple[Q, tuple[int, ...]]] | None = None, seed: int = 0) -> Path:
    """A tiny DiffusionGemma-like GGUF with metadata of every value type and the given tensors."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(path, arch)
    w.add_name(name)
    w.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    w.add_context_length(4096)
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_causal_attention(False)
    w.add_head_count_kv([8])
    w.add_array(f"{arch}.attention.sliding_window_pattern", [True, False, True])
    w.add_array(f"{arch}.test.float_array", [0.5, -1.25])
    w.add_key_value(f"{arch}.test.u8_array", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
    w.add_array(f"{arch}.test.nested", [[1, 2], [3]])
    if canvas_length is not None:
        w.add_uint32("diffusion.canvas_length", canvas_length)
    # same-length keys: the corruption tests turn the second into a duplicate of the first
    w.add_float32("diffusion.eb_t_min", 0.4)
    w.add_float32("diffusion.eb_t_max", 0.8)
    for add, key, value in [(w.add_uint8, "u8", 200), (w.add_int8, "i8", -100), (w.add_uint16, "u16", 60000),
                            (w.add_int16, "i16", -30000), (w.add_uint32, "u32", 4_000_000_000),
                            (w.add_int32, "i32", -2_000_000_000), (w.add_float32, "f32", 1.5),
                            (w.add_uint64, "u64", 2**63 + 5), (w.add_int64, "i64", -(2**62)),
                            (w.add_float64, "f64", 1e-300), (w.add_bool, "bool", True),
                            (w.add_string, "string", "héllo wörld")]:
        add(f"test.{key}", value)
    w.add_tokenizer_model("gemma4")
    w.add_token_list(TOKENS)
    w.add_token_scores([float(-i) for i in range(len(TOKENS))])
    w.add_token_types([3] * 5 + [1] * (len(TOKENS) - 5))
    w.add_token_merges(["a b"])
    w.add_chat_template("{{ messages[0]['content'] }}")
    for name, (qtype, shape) in (SAMPLE_TENSORS if tensors is None else tensors).items():
        w.add_tensor(name, quantized(qtype, shape, rng), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
