"""Whether a prompt fits the model's context, checked before the prompt is stored: a prompt that
cannot be answered must not become part of the chat (every later turn would fail on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from dg_chat.config import SamplerSettings
from dg_chat.text.chat import Message

if TYPE_CHECKING:
    from dg_chat.engine.engine import Engine


def context_problem(engine: Engine, messages: Sequence[Message], sampler: SamplerSettings) -> str | None:
    """Why `messages` cannot be answered (the prompt leaves no room for one canvas), else None."""
    # Imported when called: the engine (hence torch) is loaded by then; the app starts without it.
    from dg_chat.engine.generate import ContextOverflowError, check_context

    try:
        check_context(engine.backend, len(engine.prompt_ids(messages, sampler.thinking)), sampler.max_canvases)
    except ContextOverflowError as exc:
        return str(exc)
    return None
