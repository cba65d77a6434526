"""libllama itself, below both the llama.cpp backend and the backend choice: the library
(llama-cpp-python's ctypes module, loaded once, its log captured), the architectures it knows,
and the architectures each dg-chat backend runs.

libllama has no public list of its architectures, so we read its own name table: the exported
(C++) `llm_arch_name(llm_arch)` maps each enum value to the name that GGUF files carry,
"(unknown)" marking the end. If a libllama lacks that symbol, the table is unknown and llama.cpp's
own load error speaks instead. 0.3.36's table has dream, llada, llada-moe and rnd1, but not
diffusion-gemma (open upstream PRs #24423/#24427): DiffusionGemma runs on the PyTorch engine.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections import deque
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dg_chat.errors import DgChatError
from dg_chat.gguf.architectures import DIFFUSION_GEMMA, MASK_ARCHITECTURES

log = logging.getLogger(__name__)

TORCH_ARCHITECTURES = frozenset({DIFFUSION_GEMMA})
"""What the PyTorch engine (engine/backends/torch_dg/) runs."""
LLAMA_ARCHITECTURES = frozenset(MASK_ARCHITECTURES)
"""What dg-chat's llama.cpp driver (engine/backends/llama.py) runs: every mask-token architecture."""
_MAX_ARCH_ENUM = 4096


class LlamaError(DgChatError):
    """llama.cpp cannot load or run this model (the message says why, in one line)."""


class _LogCapture:
    """libllama's log goes to Python logging; error lines are kept to explain failures."""

    ERROR, CONTINUE = 4, 5  # ggml_log_level values (ggml.h)

    def __init__(self, lib: Any):
        self.errors: deque[str] = deque(maxlen=20)
        self._partial = ""
        self._level = 0
        self.callback = lib.llama_log_callback(self._on_log)  # kept referenced: C holds it
        lib.llama_log_set(self.callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        if level != self.CONTINUE:
            self._level = level
        self._partial += text.decode("utf-8", errors="replace")
        *lines, self._partial = self._partial.split("\n")
        for line in filter(None, (line.strip() for line in lines)):
            if self._level == self.ERROR:
                self.errors.append(line)
            # debug only: failures reach the user as one-line errors, and stderr belongs to the UI
            log.debug("%s", line)

    def reason(self) -> str:
        """The first error logged since the last `clear()`, else a generic phrase."""
        return clean_log_line(self.errors[0]) if self.errors else "no reason given (see the debug log)"

    def clear(self) -> None:
        self.errors.clear()


def clean_log_line(line: str) -> str:
    """A libllama log or abort line without its function-name and source-path prefixes."""
    line = re.sub(r"^.*?(GGML_ASSERT|GGML_ABORT)", r"\1", line)
    return re.sub(r"\s+", " ", re.sub(r"^(?:\w+: )+", "", line)).strip()


@functools.cache
def library_and_log() -> tuple[Any, _LogCapture]:
    """llama-cpp-python's ctypes module, initialised once, with its log captured."""
    try:
        import llama_cpp.llama_cpp as lib  # noqa: PLC0415 - heavy, and only the llama backend needs it
    except Exception as exc:  # noqa: BLE001 - a missing or broken shared library raises OSError etc.
        raise LlamaError(f"llama-cpp-python is not usable ({type(exc).__name__}: {exc}); "
                         "reinstall it (pip install llama-cpp-python==0.3.36)") from None
    capture = _LogCapture(lib)
    lib.llama_backend_init()
    return lib, capture


def library() -> Any:
    """The llama_cpp.llama_cpp module (raises LlamaError if it cannot be imported)."""
    return library_and_log()[0]


@functools.cache
def libllama_architectures() -> frozenset[str] | None:
    """Every architecture name in the installed libllama's table; None if it cannot be read."""
    try:
        arch_name = library()._lib["_Z13llm_arch_name8llm_arch"]
    except (LlamaError, AttributeError, KeyError):
        return None
    arch_name.argtypes, arch_name.restype = [ctypes.c_int], ctypes.c_char_p
    names: set[str] = set()
    for value in range(_MAX_ARCH_ENUM):
        name = arch_name(value).decode()
        if name == "(unknown)":  # LLM_ARCH_UNKNOWN, the last enum value
            return frozenset(names)
        names.add(name)  # gaps in the table read "unknown": harmless
    return None


def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python's version, None when it is not installed."""
    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None
