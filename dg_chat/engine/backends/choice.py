"""Which backend runs a GGUF: `auto`, `torch` or `llama`.

llama runs an architecture when dg-chat's llama.cpp driver handles it AND the installed libllama
knows it (its name table, read by llama_lib.libllama_architectures).
"""

from __future__ import annotations

import os
from typing import Any

from dg_chat.config import BACKENDS, BackendChoice, BackendName
from dg_chat.engine.backends.llama_lib import (
    LLAMA_ARCHITECTURES,
    TORCH_ARCHITECTURES,
    LlamaError,
    libllama_architectures,
    library,
    llama_cpp_version,
)
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import open_gguf


def _llama_problem(architecture: str) -> str | None:
    """Why llama cannot run `architecture` (None: it can)."""
    try:
        library()
    except LlamaError as exc:
        return str(exc)
    known = libllama_architectures()
    if known is not None and architecture not in known:
        return (f"the installed llama.cpp (llama-cpp-python {llama_cpp_version()}) cannot load "
                f"'{architecture}' models")
    if architecture not in LLAMA_ARCHITECTURES:
        return f"dg-chat's llama.cpp backend does not run '{architecture}' models"
    return None


def choose_backend(architecture: str, requested: BackendChoice = "auto") -> BackendName:
    """"torch" or "llama" for this architecture, or a DgChatError saying why not and what to do."""
    everything = ", ".join(sorted(TORCH_ARCHITECTURES | LLAMA_ARCHITECTURES))
    if requested == "torch":
        if architecture not in TORCH_ARCHITECTURES:
            hint = ("use --backend llama (or auto)" if architecture in LLAMA_ARCHITECTURES
                    else f"dg-chat runs {everything}")
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
        raise DgChatError(f"unknown backend {requested!r} ({', '.join(BACKENDS)})")
    if architecture in LLAMA_ARCHITECTURES:
        problem = _llama_problem(architecture)
        if problem is not None:
            raise DgChatError(problem)
        return "llama"
    if architecture in TORCH_ARCHITECTURES:
        return "torch"
    raise DgChatError(f"no backend runs the '{architecture}' architecture (supported: {everything})")


def choose_backend_for_gguf(path: str | os.PathLike, requested: BackendChoice = "auto") -> tuple[str, BackendName]:
    """(architecture, backend) of a GGUF file; GGUFError or DgChatError (one line) if none fits."""
    with open_gguf(path) as gguf:
        architecture = gguf.architecture
    return architecture, choose_backend(architecture, requested)


def llama_status() -> dict[str, Any]:
    """For `dg-chat doctor`: the llama.cpp side of the installation."""
    status: dict[str, Any] = {"llama_cpp_python": llama_cpp_version(), "usable": False, "error": None,
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
