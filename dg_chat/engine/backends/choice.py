"""Which backend runs a GGUF: `auto`, `torch` or `llama`.

llama runs an architecture when dg-chat's llama.cpp driver handles it AND the installed libllama
knows it. libllama has no public list of its architectures, so we read its own name table: the
exported (C++) `llm_arch_name(llm_arch)` maps each enum value to the name that GGUF files carry,
"(unknown)" marking the end. If a libllama lacks that symbol, the table is unknown and llama.cpp's
own load error speaks instead. 0.3.36's table has dream, llada, llada-moe and rnd1, but not
diffusion-gemma (open upstream PRs #24423/#24427): DiffusionGemma runs on the PyTorch engine.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

from dg_chat.errors import DgChatError

TORCH_ARCHITECTURES = frozenset({"diffusion-gemma"})
LLAMA_ARCHITECTURES = frozenset({"dream", "llada", "llada-moe", "rnd1"})
"""What dg-chat's llama.cpp driver (engine/backends/llama.py) runs."""
_MAX_ARCH_ENUM = 4096


@functools.cache
def libllama_architectures() -> frozenset[str] | None:
    """Every architecture name in the installed libllama's table; None if it cannot be read."""
    from dg_chat.engine.backends.llama import LlamaError, library  # noqa: PLC0415 - loads libllama

    try:
        arch_name = library()._lib["_Z13llm_arch_name8llm_arch"]
    except (LlamaError, AttributeError, KeyError):
        return None
    arch_name.argtypes, arch_name.restype = [ctypes.c_int], ctypes.c_char_p
    names = set()
    for value in range(_MAX_ARCH_ENUM):
        name = arch_name(value).decode()
        if name == "(unknown)":  # LLM_ARCH_UNKNOWN, the last enum value
            return frozenset(names)
        names.add(name)  # gaps in the table read "unknown": harmless
    return None


def _llama_problem(architecture: str) -> str | None:
    """Why llama cannot run `architecture` (None: it can)."""
    from dg_chat.engine.backends.llama import LlamaError, library  # noqa: PLC0415

    try:
        library()
    except LlamaError as exc:
        return str(exc)
    known = libllama_architectures()
    if known is not None and architecture not in known:
        return (f"the installed llama.cpp (llama-cpp-python {_llama_cpp_version()}) cannot load "
                f"'{architecture}' models")
    if architecture not in LLAMA_ARCHITECTURES:
        return f"dg-chat's llama.cpp backend does not run '{architecture}' models"
    return None


def _llama_cpp_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def choose_backend(architecture: str, requested: str = "auto") -> str:
    """"torch" or "llama" for this architecture, or a DgChatError saying why not and what to do."""
    everything = ", ".join(sorted(TORCH_ARCHITECTURES | LLAMA_ARCHITECTURES))
    if requested == "torch":
        if architecture not in TORCH_ARCHITECTURES:
            hint = "use --backend llama (or auto)" if architecture in LLAMA_ARCHITECTURES else f"dg-chat runs {everything}"
            raise DgChatError(f"the torch backend runs only {', '.join(sorted(TORCH_ARCHITECTURES))} models, "
                              f"not '{architecture}'; {hint}")
        return "torch"
    if requested == "llama":
        problem = _llama_problem(architecture)
        if problem is None:
            return "llama"
        hint = "use --backend torch (or auto)" if architecture in TORCH_ARCHITECTURES else f"dg-chat runs {everything}"
        raise DgChatError(f"{problem}; {hint}")
    if requested != "auto":
        raise DgChatError(f"unknown backend {requested!r} (auto, torch or llama)")
    if architecture in LLAMA_ARCHITECTURES:
        problem = _llama_problem(architecture)
        if problem is not None:
            raise DgChatError(problem)
        return "llama"
    if architecture in TORCH_ARCHITECTURES:
        return "torch"
    raise DgChatError(f"no backend runs the '{architecture}' architecture (supported: {everything})")


def choose_backend_for_gguf(path: str | os.PathLike, requested: str = "auto") -> tuple[str, str]:
    """(architecture, backend) of a GGUF file; GGUFError or DgChatError (one line) if none fits."""
    from dg_chat.gguf.reader import open_gguf  # noqa: PLC0415

    with open_gguf(path) as gguf:
        architecture = gguf.architecture
    return architecture, choose_backend(architecture, requested)


def llama_status() -> dict[str, Any]:
    """For `dg-chat doctor`: the llama.cpp side of the installation."""
    from dg_chat.engine.backends.llama import LlamaError, library  # noqa: PLC0415

    status: dict[str, Any] = {"llama_cpp_python": _llama_cpp_version(), "usable": False, "error": None,
                              "library": None, "gpu_offload": False, "libllama_architectures_readable": False}
    try:
        lib = library()
    except LlamaError as exc:
        status["error"] = str(exc)
    else:
        status.update(usable=True, library=lib._lib._name, gpu_offload=bool(lib.llama_supports_gpu_offload()),
                      libllama_architectures_readable=libllama_architectures() is not None)
    interesting = sorted(TORCH_ARCHITECTURES | LLAMA_ARCHITECTURES)
    status["architectures"] = {
        "llama": [a for a in interesting if status["usable"] and _llama_problem(a) is None],
        "torch": sorted(TORCH_ARCHITECTURES),
    }
    return status
