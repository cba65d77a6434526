"""Conversations to prompt token ids, and model output back to thinking + answer.

(Interface stub: the Gemma 4 template, the GGUF-jinja fallback and the output parser are
built in the foundation issue.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

Role = Literal["system", "user", "model"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    thinking: str = ""
    """A model turn's thoughts; never sent back to the model in later prompts."""


class ChatFormat(Protocol):
    def render(self, messages: Sequence[Message], *, thinking: bool) -> list[int]:
        """Token ids of the whole conversation plus the generation prompt for the next model turn.
        User and model text is tokenized without special-token parsing."""
        ...

    def parse(self, token_ids: Sequence[int]) -> tuple[str, str]:
        """Generated ids (up to an end token) -> (thinking, answer) text."""
        ...
