"""A model file's jinja chat template, rendered in a sandbox the way transformers renders it.

The template comes from a downloaded GGUF, so it is untrusted code: it runs in jinja2's
ImmutableSandboxedEnvironment, and every failure becomes a one-line DgChatError.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dg_chat.errors import DgChatError


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # jinja's own tojson escapes HTML characters, which chat templates do not expect
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ChatTemplate:
    def __init__(self, source: str):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise DgChatError(f"the model's chat template does not compile: {_one_line(exc)}") from None

    def render(self, messages: list[dict[str, str]], *, thinking: bool, bos_token: str, eos_token: str) -> str:
        """The prompt text for `messages` plus the generation prompt of the next assistant turn."""
        try:
            return self._template.render(messages=messages, tools=None, documents=None,
                                         add_generation_prompt=True, enable_thinking=thinking,
                                         bos_token=bos_token, eos_token=eos_token)
        except Exception as exc:  # noqa: BLE001 - the template is foreign code: any failure is the model file's
            raise DgChatError(f"the model's chat template failed: {_one_line(exc)}") from None
