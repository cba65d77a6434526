"""From settings to a running Engine: find the GGUF, choose its backend, build its tokenizer."""

from __future__ import annotations

from pathlib import Path

from dg_chat.config import Settings
from dg_chat.engine.backends.choice import choose_backend
from dg_chat.engine.engine import Engine
from dg_chat.errors import DgChatError
from dg_chat.gguf.checks import check_divisors
from dg_chat.gguf.reader import GGUFError, open_gguf
from dg_chat.gguf.summary import file_type_name
from dg_chat.hub import resolve_model
from dg_chat.text.chat import chat_format_for
from dg_chat.text.tokenizer import Tokenizer


def _tokenizer(path: Path, metadata: dict) -> Tokenizer:
    try:
        return Tokenizer.from_metadata(metadata)
    except DgChatError as exc:  # its messages name the key, not the file
        raise GGUFError(f"{path}: {exc}") from None


def load_engine(settings: Settings) -> Engine:
    """Resolve `settings.model` to a local GGUF, choose its backend and load it (slow)."""
    path = resolve_model(settings.model, settings)  # offline: names, paths, or the demo
    f = open_gguf(path)
    try:
        backend_name = choose_backend(f.architecture, settings.backend)
        metadata = f.metadata
        if backend_name == "llama":
            f.close()
            from dg_chat.engine.backends.llama import load_llama_engine_parts  # noqa: PLC0415 - only the chosen backend loads

            backend, tokenizer = load_llama_engine_parts(path, settings)
        else:
            from dg_chat.engine.backends.torch_dg.backend import TorchBackend  # noqa: PLC0415 - only the chosen backend loads

            if "rope_freqs.weight" in f.tensors:  # the engine divides by them
                check_divisors(f, "rope_freqs.weight")
            backend = TorchBackend(f, settings.device, settings.kernels)  # keeps the file mapped, closes it on close()
            tokenizer = _tokenizer(path, metadata)
    except BaseException:
        f.close()
        raise
    chat = chat_format_for(metadata, tokenizer)
    return Engine(backend, tokenizer, chat, end_ids=chat.end_ids, name=str(metadata.get("general.name") or path.stem),
                  file=str(path), quant=file_type_name(metadata.get("general.file_type")) or "")
