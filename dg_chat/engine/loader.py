"""From settings to a running Engine: find the GGUF, choose its backend, build its tokenizer."""

from __future__ import annotations

from collections.abc import Callable

from dg_chat.config import BackendName, Settings
from dg_chat.engine.backends.base import OpenedBackend
from dg_chat.engine.backends.choice import choose_backend
from dg_chat.engine.engine import Engine
from dg_chat.engine.remote.engine import RemoteEngine, connect
from dg_chat.engine.remote.spec import is_remote
from dg_chat.errors import DgChatError
from dg_chat.gguf.reader import GGUFFile, open_gguf
from dg_chat.gguf.summary import file_type_name
from dg_chat.hub import resolve_model
from dg_chat.text.chat import chat_format_for

Opener = Callable[[GGUFFile, Settings], OpenedBackend]
"""A backend module's `open_backend`: owns the open GGUF from the call on (see each module)."""


def _open_torch(gguf: GGUFFile, settings: Settings) -> OpenedBackend:
    from dg_chat.engine.backends.torch_dg.backend import open_backend  # noqa: PLC0415 - only the chosen backend loads

    return open_backend(gguf, settings)


def _open_llama(gguf: GGUFFile, settings: Settings) -> OpenedBackend:
    from dg_chat.engine.backends.llama import open_backend  # noqa: PLC0415 - only the chosen backend loads

    return open_backend(gguf, settings)


OPENERS: dict[BackendName, Opener] = {"torch": _open_torch, "llama": _open_llama}
"""Backend name -> its opener; only the chosen backend's module (and its libraries) is imported."""


def load_engine(settings: Settings) -> Engine | RemoteEngine:
    """Resolve `settings.model` to a local GGUF, choose its backend and load it (slow); a model on a
    server (openai:<base-url>#<model>) is connected to instead."""
    if is_remote(settings.model):
        return connect(settings)
    path = resolve_model(settings.model, settings)  # offline: names, paths, or the demo
    f = open_gguf(path)
    try:
        opener = OPENERS[choose_backend(f.architecture, settings.backend)]
        metadata, mapped = f.metadata, f.paths
    except BaseException:
        f.close()
        raise
    opened = opener(f, settings)  # the opener owns f from here on
    try:
        chat = chat_format_for(metadata, opened.tokenizer)
    except DgChatError as exc:  # a chat template that does not compile: name the file that has it
        opened.backend.close()
        raise DgChatError(f"{path}: {exc}") from None
    except BaseException:
        opened.backend.close()
        raise
    name = metadata.get("general.name")
    return Engine(opened.backend, opened.tokenizer, chat, end_ids=chat.end_ids,
                  name=name if isinstance(name, str) and name else path.stem, file=str(path),
                  quant=file_type_name(metadata.get("general.file_type")) or "", mapped=mapped)
