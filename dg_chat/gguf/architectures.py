"""The model architectures dg-chat runs, named once as GGUF files name them (general.architecture).

Which backend runs which is the engine's business (engine/backends/llama_lib.py); the facts here
are the file's: DiffusionGemma's canvases start as random tokens, the others' as mask tokens.
"""

from __future__ import annotations

from typing import Literal, TypeGuard, get_args

DIFFUSION_GEMMA = "diffusion-gemma"
"""Google's DiffusionGemma (reference/diffusiongemma-spec.md): uniform-noise canvases."""
MaskArchitecture = Literal["dream", "llada", "llada-moe", "rnd1"]
"""Mask-token diffusion models: Dream, LLaDA, LLaDA-MoE, RND1."""
MASK_ARCHITECTURES: tuple[MaskArchitecture, ...] = get_args(MaskArchitecture)
MOE_MASK_ARCHITECTURES: frozenset[MaskArchitecture] = frozenset({"llada-moe", "rnd1"})
"""The mixture-of-experts ones among them (their GGUFs carry expert counts)."""


def is_mask_architecture(name: str) -> TypeGuard[MaskArchitecture]:
    return name in MASK_ARCHITECTURES
