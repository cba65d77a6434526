"""`dg-chat models info NAME|PATH`: what a GGUF file is and which backend would run it."""

from __future__ import annotations

import argparse

from rich.text import Text

from dg_chat.commands.output import StdoutConsole
from dg_chat.config import BackendChoice
from dg_chat.engine.backends.choice import choose_backend
from dg_chat.engine.backends.torch_dg.hparams import ARCH, HParams
from dg_chat.engine.remote.spec import is_remote
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import GGUFError, GGUFFile, open_gguf
from dg_chat.gguf.summary import ModelSummary, human_bytes, human_count, summarize
from dg_chat.hub import resolve_model
from dg_chat.text.sanitize import visible


def run(args: argparse.Namespace) -> int:
    if is_remote(args.name):
        raise DgChatError(f"models info reads a local GGUF file; `dg-chat doctor -m {args.name}` checks a server "
                          "and lists the models it serves")
    path = resolve_model(args.name, args.settings)
    with open_gguf(path) as gguf:
        summary = summarize(gguf)
        rows = _rows(summary, backend_verdict(summary.architecture, args.settings.backend)) + _memory_rows(gguf)
    # soft_wrap: long values (paths) are neither cut nor broken by rich; the terminal wraps them
    console = StdoutConsole(highlight=False, soft_wrap=True)
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        # Text, not markup: names and types come from the file, which may contain '[' or escapes
        console.print(Text.assemble((label.ljust(width), "bold"), visible(value)))
    return 0


def backend_verdict(architecture: str, requested: BackendChoice = "auto") -> str:
    """The backend that would run the model, or "none: " and why none would."""
    try:
        return choose_backend(architecture, requested)
    except DgChatError as exc:
        return f"none: {exc}"


def _rows(s: ModelSummary, backend: str) -> list[tuple[str, str]]:
    rows = [
        ("file", f"{s.path} ({human_bytes(s.file_size)})"),
        ("architecture", s.architecture),
        ("name", s.name or "(none)"),
        ("parameters", f"{human_count(s.parameters)} ({s.parameters:,})"),
        ("file type", s.file_type or "(not set)"),
    ]
    for i, group in enumerate(s.quant_mix):
        plural = "s" if group.tensors != 1 else ""
        rows.append(("tensor types" if i == 0 else "",
                     f"{group.type}: {group.tensors} tensor{plural}, {human_bytes(group.n_bytes)}"))
    if not s.quant_mix:
        rows.append(("tensor types", "(no tensors: vocabulary only)"))
    rows += [
        ("context length", _number(s.context_length)),
        ("canvas length", "n/a (mask diffusion)" if s.mask_diffusion else _number(s.canvas_length)),
        ("vocabulary", _number(s.vocab_size)),
    ]
    if s.experts:
        rows.append(("experts", f"{s.experts} ({_number(s.experts_used)} used per token)"))
    rows += [
        ("chat template", "present" if s.has_chat_template else "absent"),
        ("backend", backend),
    ]
    return rows


def _memory_rows(gguf: GGUFFile) -> list[tuple[str, str]]:
    """DiffusionGemma only: the CUDA memory it needs with each kernel choice, from the header alone."""
    if gguf.architecture != ARCH:
        return []
    from dg_chat.engine.backends.torch_dg.memory import context_label, cuda_memory, default_context  # noqa: PLC0415 - imports torch

    try:
        hp = HParams.from_gguf(gguf)
    except (GGUFError, ValueError, TypeError) as exc:  # missing or malformed hyper-parameters
        return [("VRAM on CUDA", f"unknown: {str(exc).removeprefix(f'{gguf.path}: ')}")]
    context = default_context(hp)
    triton, reference = (cuda_memory(gguf, hp, kernels, context) for kernels in ("triton", "reference"))
    return [("VRAM on CUDA", f"{context_label(context)} context: {triton.describe()}"), ("", reference.describe())]


def _number(value: int | None) -> str:
    return "(not set)" if value is None else f"{value:,}"
