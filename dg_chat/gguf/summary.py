"""What a GGUF model is, in a few facts: for `dg-chat models info`, the TUI and `doctor`.

`summarize()` only reads the already parsed header; it never touches tensor data. Which backend
would run the model is the engine's answer (engine/backends/choice.py), not a fact of the file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf.constants import LlamaFileType

from dg_chat.gguf.architectures import MASK_ARCHITECTURES
from dg_chat.gguf.reader import GGUFFile

# Mask-token diffusion models denoise the whole answer at once: they have no canvas length.
MASK_DIFFUSION_ARCHITECTURES = frozenset(MASK_ARCHITECTURES)
CANVAS_LENGTH_KEY = "diffusion.canvas_length"  # no architecture prefix (diffusiongemma-spec §5.1)


@dataclass(frozen=True, slots=True)
class QuantGroup:
    """The tensors of one element type."""

    type: str
    tensors: int
    n_bytes: int


@dataclass(frozen=True, slots=True)
class ModelSummary:
    path: Path
    file_size: int
    architecture: str
    name: str | None
    parameters: int
    """Sum of the elements of all tensors."""
    file_type: str | None
    """general.file_type as llama.cpp names it (Q4_K_M, ...)."""
    quant_mix: tuple[QuantGroup, ...]
    """Element types, most bytes first."""
    context_length: int | None
    canvas_length: int | None
    vocab_size: int | None
    experts: int | None
    experts_used: int | None
    has_chat_template: bool

    @property
    def mask_diffusion(self) -> bool:
        return self.architecture in MASK_DIFFUSION_ARCHITECTURES


def summarize(gguf: GGUFFile) -> ModelSummary:
    arch = gguf.architecture
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for info in gguf.tensors.values():
        groups[info.type.name][0] += 1
        groups[info.type.name][1] += info.n_bytes
    tokens = gguf.get("tokenizer.ggml.tokens")
    template = gguf.get("tokenizer.chat_template")
    name = gguf.get("general.name")
    return ModelSummary(
        path=gguf.path,
        file_size=gguf.file_size,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        parameters=sum(info.n_elements for info in gguf.tensors.values()),
        file_type=file_type_name(gguf.get("general.file_type")),
        quant_mix=tuple(QuantGroup(t, n, size) for t, (n, size) in sorted(groups.items(), key=lambda g: -g[1][1])),
        context_length=_int(gguf.arch_get("context_length")),
        canvas_length=_int(gguf.get(CANVAS_LENGTH_KEY)),
        vocab_size=len(tokens) if isinstance(tokens, list) else _int(gguf.arch_get("vocab_size")),
        experts=_int(gguf.arch_get("expert_count")),
        experts_used=_int(gguf.arch_get("expert_used_count")),
        has_chat_template=isinstance(template, str) and bool(template),
    )


def _int(value: Any) -> int | None:
    """A metadata integer, or None when absent or of another type (a malformed file)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def file_type_name(value: Any) -> str | None:
    if _int(value) is None:
        return None
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return f"unknown ({value})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def human_count(n: int) -> str:
    """25_200_000_000 -> '25.2B'."""
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """16_000_000_000 -> '16.0 GB' (decimal units, as model downloads are labelled)."""
    for size, unit in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "kB")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
