"""Which backend runs a GGUF: `auto`, `torch` or `llama`.

(First version; the llama.cpp issue refines what "libllama can load it" means.)
"""

from __future__ import annotations

from dg_chat.errors import DgChatError

TORCH_ARCHITECTURES = frozenset({"diffusion-gemma"})
LLAMA_ARCHITECTURES = frozenset({"dream", "llada", "llada-moe", "rnd1"})


def choose_backend(architecture: str, requested: str = "auto") -> str:
    """"torch" or "llama" for this architecture, or a DgChatError saying why not."""
    runs_on = {"torch": architecture in TORCH_ARCHITECTURES, "llama": architecture in LLAMA_ARCHITECTURES}
    if requested == "auto":
        for name in ("llama", "torch"):
            if runs_on[name]:
                return name
        raise DgChatError(f"no backend runs the '{architecture}' architecture "
                          f"(supported: {', '.join(sorted(TORCH_ARCHITECTURES | LLAMA_ARCHITECTURES))})")
    if not runs_on[requested]:
        raise DgChatError(f"the {requested} backend cannot run '{architecture}' models; use --backend auto")
    return requested
