#!/usr/bin/env python3
"""Tiny random-weight GGUFs of llama.cpp's four diffusion architectures.

    python scripts/make_tiny_llama_models.py OUT_DIR [--vocab-size N] [--n-embd N] [--layers N]

writes OUT_DIR/{dream,llada,llada-moe,rnd1}.gguf: real GGUF files that llama.cpp loads and runs
(random weights, so the text is gibberish), each with the metadata the converters in llama.cpp's
`conversion/` write for these families: a byte-level BPE tokenizer (trained here with
`tokenizers` on a few sentences), a mask token, a small ChatML jinja chat template, and
`diffusion.shift_logits = false` for the LLaDA family (Dream and RND1 leave it unset: shifted).
Tests import `write_model` to build them into temporary directories in well under a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter, TokenType
from gguf.gguf_writer import GGUFValue
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dg_chat.gguf.architectures import MASK_ARCHITECTURES as ARCHITECTURES, MOE_MASK_ARCHITECTURES as MOE_ARCHITECTURES

BOS, EOS, IM_START, IM_END, MASK = "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END, MASK)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = """\
A diffusion language model drafts a whole block of text at once and refines it over a few steps.
Every step looks at the prompt and at the current draft, predicts each masked position, and keeps
the predictions it is most sure of. The rest stay masked until a later step fills them in.
The quick brown fox jumps over the lazy dog. Hello, world! How are you today? I am fine, thanks.
Numbers like 12, 345 and 6789 appear in text too, as do symbols: (a + b) * c = d; x -> y.
The terminal shows each step live, then commits the block and starts the next one.
"""


def train_tokenizer(vocab_size: int) -> tuple[list[str], list[str]]:
    """Byte-level BPE (GPT-2 style) trained on CORPUS: (tokens in id order, merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]  # the Python API does not expose them
    return tokens, [m if isinstance(m, str) else " ".join(m) for m in merges]


def write_model(path: str | Path, architecture: str, *, vocab_size: int = 384, n_embd: int = 64,
                n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128,
                n_expert: int = 4, n_expert_used: int = 2, context_length: int = 4096,
                seed: int = 0, metadata: Mapping[str, Any] | None = None,
                skip_tensors: Collection[str] = ()) -> Path:
    """Write one tiny random model. `vocab_size` beyond the trained BPE is filled with unused
    tokens, so a realistic vocabulary (32k and more) costs nothing to build.

    `metadata` overrides keys (None removes one) and `skip_tensors` leaves tensors out: tests
    use them to write deliberately broken files."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}")
    path = Path(path)
    tokens, merges = train_tokenizer(min(vocab_size, 512))
    tokens += [f"<|unused_{i}|>" for i in range(vocab_size - len(tokens))]
    n_vocab = len(tokens)
    special = set(SPECIAL_TOKENS)
    types = [TokenType.CONTROL if t in special else TokenType.UNUSED if t.startswith("<|unused_") else TokenType.NORMAL
             for t in tokens]
    ids = {t: i for i, t in enumerate(tokens)}

    w = GGUFWriter(path, architecture)
    w.add_name(f"tiny-random-{architecture}")
    w.add_context_length(context_length)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_causal_attention(False)
    if architecture in MOE_ARCHITECTURES:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
        w.add_expert_feed_forward_length(n_ff // n_expert_used)
    if architecture in ("llada", "llada-moe"):
        w.add_diffusion_shift_logits(False)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2" if architecture in ("dream", "rnd1") else "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(ids[BOS])
    w.add_eos_token_id(ids[EOS])
    w.add_eot_token_id(ids[IM_END])
    w.add_pad_token_id(ids[EOS])
    w.add_mask_token_id(ids[MASK])
    w.add_add_bos_token(architecture in ("llada", "llada-moe"))
    w.add_chat_template(CHAT_TEMPLATE)

    for key, value in (metadata or {}).items():
        if value is None:
            w.kv_data[0].pop(key, None)
        else:  # keep the written type (unless a string replaces a number), so a test can change a value
            old = w.kv_data[0].get(key)
            new_type = GGUFValueType.UINT32 if isinstance(value, int) else GGUFValueType.get_type(value)
            same_kind = old and isinstance(value, str) == (old.type == GGUFValueType.STRING)
            w.kv_data[0][key] = GGUFValue(value, old.type, old.sub_type) if same_kind else GGUFValue(value, new_type)

    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def tensor(name: str, *shape: int, scale: float = 0.25) -> None:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name not in skip_tensors:
            w.add_tensor(name, data)

    def ones(name: str, n: int) -> None:
        if name not in skip_tensors:
            w.add_tensor(name, np.ones(n, dtype=np.float32))

    tensor("token_embd.weight", n_vocab, n_embd, scale=1.0)
    ones("output_norm.weight", n_embd)
    tensor("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        ones(p + "attn_norm.weight", n_embd)
        tensor(p + "attn_q.weight", n_head * head_dim, n_embd)
        tensor(p + "attn_k.weight", n_head_kv * head_dim, n_embd)
        tensor(p + "attn_v.weight", n_head_kv * head_dim, n_embd)
        if architecture == "dream":  # Qwen2 has q/k/v biases
            for name, n in (("attn_q", n_head), ("attn_k", n_head_kv), ("attn_v", n_head_kv)):
                tensor(p + name + ".bias", n * head_dim, scale=0.05)
        tensor(p + "attn_output.weight", n_embd, n_head * head_dim)
        ones(p + "ffn_norm.weight", n_embd)
        if architecture in MOE_ARCHITECTURES:
            ones(p + "attn_q_norm.weight", head_dim)
            ones(p + "attn_k_norm.weight", head_dim)
            n_ff_exp = n_ff // n_expert_used
            tensor(p + "ffn_gate_inp.weight", n_expert, n_embd)
            tensor(p + "ffn_gate_exps.weight", n_expert, n_ff_exp, n_embd)
            tensor(p + "ffn_up_exps.weight", n_expert, n_ff_exp, n_embd)
            tensor(p + "ffn_down_exps.weight", n_expert, n_embd, n_ff_exp)
        else:
            tensor(p + "ffn_gate.weight", n_ff, n_embd)
            tensor(p + "ffn_up.weight", n_ff, n_embd)
            tensor(p + "ffn_down.weight", n_embd, n_ff)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=384)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for arch in ARCHITECTURES:
        path = write_model(args.out_dir / f"{arch}.gguf", arch, vocab_size=args.vocab_size,
                           n_embd=args.n_embd, n_layer=args.layers)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
