"""How much GPU memory DiffusionGemma needs on CUDA, computed from the GGUF header alone (no GPU):
checked before loading, shown by `dg-chat models info`. All sizes are in bytes; GB means 10⁹ bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dg_chat.config import KernelsName
from dg_chat.engine.backends.torch_dg.cache import GrowingKVCache, StaticKVCache
from dg_chat.engine.backends.torch_dg.hparams import HParams
from dg_chat.engine.backends.torch_dg.weights import device_bytes
from dg_chat.gguf.reader import GGUFFile

GB = 10**9
DEFAULT_CONTEXT = 32768
"""Tokens of context the estimate assumes unless the model's own context is shorter."""
RUNTIME_OVERHEAD = 800_000_000
"""The CUDA context and the allocator's slack, in bytes (gpu-engine.md §8: 0.5-1 GB)."""
KV_BYTES = 2
"""bf16 keys and values."""


@dataclass(frozen=True)
class MemoryEstimate:
    """GPU memory for one model, kernel choice and context, in bytes."""

    kernels: KernelsName
    context: int
    """Tokens of context the KV cache holds."""
    weights: int
    kv_cache: int
    activations: int
    runtime: int
    """CUDA context and allocator slack."""

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations + self.runtime

    def describe(self) -> str:
        """'19.4 GB with triton kernels (weights 16.8, KV cache 1.4, activations 0.4, CUDA runtime 0.8)'."""
        return (f"{self.total / GB:.1f} GB with {self.kernels} kernels (weights {self.weights / GB:.1f}, "
                f"KV cache {self.kv_cache / GB:.1f}, activations {self.activations / GB:.1f}, "
                f"CUDA runtime {self.runtime / GB:.1f})")


def default_context(hp: HParams) -> int:
    """The context (tokens) of the estimate: DEFAULT_CONTEXT, or the model's own if shorter."""
    return min(DEFAULT_CONTEXT, hp.context_length)


def context_label(tokens: int) -> str:
    """32768 -> '32k', 1000 -> '1,000-token'."""
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else f"{tokens:,}-token"


def weight_bytes(f: GGUFFile, kernels: KernelsName) -> int:
    """triton: every tensor as stored in the file (quantised blocks, F32 norms as they are);
    reference: what `Weights` allocates on CUDA (dense tensors in bf16, experts as stored)."""
    if kernels == "triton":
        return sum(info.n_bytes for info in f.tensors.values())
    return device_bytes(f, torch.device("cuda"), torch.bfloat16)


def kv_cache_bytes(hp: HParams, kernels: KernelsName, context: int) -> int:
    """bf16 K and V: kv_heads · head_dim · 2 · 2 bytes per position and layer, for the cache each
    path keeps (cache.py). triton (StaticKVCache): a sliding layer holds a ring of window − 1 +
    canvas positions, a full-attention layer `context`, each plus a canvas of decoder scratch;
    reference (GrowingKVCache): a sliding layer holds its window and the rollback over the last
    answer (window − 1 + ROLLBACK), a full-attention layer `context`."""
    if kernels == "triton":
        sliding, full = StaticKVCache.ring_slots(hp) + hp.canvas_length, context + hp.canvas_length
    else:
        sliding, full = hp.window - 1 + GrowingKVCache.ROLLBACK, context
    return sum((min(context, sliding) if layer.sliding else full) * layer.kv_heads * layer.head_dim * 2 * KV_BYTES
               for layer in hp.layers)


def activation_bytes(hp: HParams, kernels: KernelsName) -> int:
    """The largest buffers of a decode step, C = canvas, V = vocabulary, k = experts used:
    fp32 logits C·V·4, the MoE intermediates C·k·(hidden + 2·expert_ff)·4, and on the reference
    path the bf16 self-conditioning probabilities C·V·2 and 2 more fp32 [C, V] sampler buffers
    (the Triton path reads the logits for self-conditioning and fuses the sampler)."""
    canvas_vocab = hp.canvas_length * hp.vocab_size
    moe = hp.canvas_length * hp.experts_used * (hp.hidden + 2 * hp.expert_ff) * 4
    reference_only = canvas_vocab * 2 + 2 * canvas_vocab * 4 if kernels == "reference" else 0
    return canvas_vocab * 4 + moe + reference_only


def cuda_memory(f: GGUFFile, hp: HParams, kernels: KernelsName, context: int) -> MemoryEstimate:
    """What DiffusionGemma in `f` needs on a CUDA GPU with `kernels` ("triton" or "reference")
    and a KV cache of `context` tokens."""
    return MemoryEstimate(kernels=kernels, context=context, weights=weight_bytes(f, kernels),
                          kv_cache=kv_cache_bytes(hp, kernels, context), activations=activation_bytes(hp, kernels),
                          runtime=RUNTIME_OVERHEAD)
