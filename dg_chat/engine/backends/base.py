"""What every backend provides: a KV-cached prefix, one denoising forward, and a commit.

The sampler and the block loop (engine/sampling.py, engine/generate.py) are shared by all
backends, so a backend holds no sampling logic at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from dg_chat.config import BackendName
from dg_chat.engine.turn_engine import Noise
from dg_chat.errors import DgChatError
from dg_chat.text.tokenizer import SpecialTokenText


@dataclass(frozen=True, slots=True)
class SelfCondition:
    """The previous step's output, fed back into the next decoder step."""

    logits: torch.Tensor
    """Processed (tempered) logits, float32 [C, V]."""
    probs: torch.Tensor | None = None
    """softmax(logits) in float32 [C, V] where the sampler computed it for the draw (the reference
    sampler): float32 backends reuse it. None from the fused sampler, which never materialises it."""
    lse: torch.Tensor | None = None
    """logsumexp(logits) in float32 [C] where the sampler has it (the fused sampler): softmax(logits)
    is then exp(logits - lse), so a fused kernel can compute softmax(logits) @ E in one pass."""
    candidates: torch.Tensor | None = None
    """int64 [C, K], where the sampler has them (the fused sampler: the two largest logits of each
    of its tiles): the positions whose candidates hold nearly all the mass take a shortcut on the
    Triton path (`gemm.SettledRows`)."""


class Backend(Protocol):
    """Structurally also the `BackendView` that front ends read (engine/turn_engine.py)."""

    name: BackendName
    """"torch" or "llama"."""
    path: Path
    """The GGUF file."""
    architecture: str
    """general.architecture of the GGUF (diffusion-gemma, dream, llada, ...)."""
    canvas_length: int
    """Tokens per denoised block."""
    vocab_size: int
    """Rows of the logits (may exceed the tokenizer's vocabulary)."""
    context_length: int
    """Most tokens (prompt + all canvases) the backend can hold."""
    device: str
    """Where it computes: "cpu", "cuda:0", ..."""
    noise: Noise
    """"uniform": canvases start as random tokens (DiffusionGemma); "mask": as mask tokens (Dream, LLaDA)."""
    mask_token_id: int | None
    """The mask token of "mask" models."""
    fused_sampling: bool
    """Sample with the fused on-device sampler (the Triton path of DiffusionGemma) instead of the
    reference one."""

    @property
    def cached_tokens(self) -> int:
        """Tokens currently held as context."""
        ...

    def prefill(self, token_ids: Sequence[int]) -> int:
        """Make the context hold exactly `token_ids`, reusing the longest cached common prefix.

        Returns how many tokens had to be encoded."""
        ...

    def denoise(self, canvas: torch.Tensor, self_cond: SelfCondition | None) -> torch.Tensor:
        """Logits, float32 [canvas_length, vocab_size], for `canvas` (int64 [canvas_length])
        placed right after the context. `self_cond` is the previous step's output (None on a
        block's first step); mask models ignore it."""
        ...

    def commit(self, canvas: torch.Tensor) -> None:
        """Append a finished canvas to the context."""
        ...

    def close(self) -> None:
        """Free the model and its memory; the backend is unusable afterwards."""
        ...


class BackendError(DgChatError):
    """Raised by backends for failures the user can act on (message: one line, shown as is)."""


@dataclass(frozen=True, slots=True)
class OpenedBackend:
    """What a backend module's `open_backend(gguf, settings)` hands the loader (engine/loader.py)."""

    backend: Backend
    tokenizer: SpecialTokenText
    """The model's tokenizer: built from the GGUF's metadata (torch) or libllama's own (llama)."""
