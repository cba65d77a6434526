"""Requests in, JSON out: the chat-completion protocol of `dg-chat serve` (see `dg_chat.serve`).

Everything here is pure: a request body becomes a checked `ChatRequest` (or a `RequestError` with
its HTTP status and one-line message), and the engine's events become the response objects.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dg_chat.config import RANGES, SEED_RANGE, SamplerSettings
from dg_chat.engine.events import BlockCommitted, CanvasStep, Stats, TurnFinished
from dg_chat.text.chat import Message, Role
from dg_chat.text.sanitize import well_formed

CANVAS_EVENT = "dg_chat.canvas"
DONE = "data: [DONE]\n\n"
ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "model"}
"""OpenAI's message roles -> dg-chat's."""


class RequestError(Exception):
    """A request answered with an error: HTTP status, OpenAI error type and a one-line message."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return error_body(self.status, str(self), self.kind)


def error_body(status: int, message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": status}}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat-completion request, checked: what the engine is to answer, and how to send it."""

    messages: list[Message]
    sampler: SamplerSettings
    stream: bool = False
    include_usage: bool = False
    canvas: bool = False
    """Send every denoising step as a dg_chat.canvas event."""


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "an object",
          list: "a list"}


def _show(value: Any) -> str:
    """A request's value quoted in an error (well-formed: a lone surrogate cannot be sent back as UTF-8)."""
    text = well_formed(json.dumps(value, ensure_ascii=False))
    return text if len(text) <= 40 else text[:39] + "…"


def _check(value: Any, kind: type, where: str) -> Any:
    """`value` as a JSON value of `kind` (an int is a float too, a bool is never a number)."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:  # an integer of 309 digits or more: out of every range
            value = math.inf if value > 0 else -math.inf
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise RequestError(400, f"{where}: expected {_KINDS[kind]}, got {_show(value)}")
    return value


def _field(obj: Mapping[str, Any], key: str, kind: type, default: Any, where: str | None = None) -> Any:
    """obj[key] checked against `kind`; `default` when missing or null."""
    value = obj.get(key)
    return default if value is None else _check(value, kind, where or key)


def _json_kind(hint: Any) -> tuple[type, bool]:
    """The JSON kind of a settings field's type (a Literal's is str: RANGES checks its choices),
    and whether it may be null."""
    optional = type(None) in get_args(hint)
    if optional:
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    return (str if get_origin(hint) is Literal else hint), optional


_SAMPLER_KINDS = {name: _json_kind(hint) for name, hint in get_type_hints(SamplerSettings).items()}


def sampler_with(base: SamplerSettings, overrides: Mapping[str, Any]) -> SamplerSettings:
    """`base` with the fields of `overrides` (a request's dg_chat.sampler: SamplerSettings field names),
    each checked for its type and range as the config file's are."""
    where = "dg_chat.sampler"
    values: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in _SAMPLER_KINDS:
            raise RequestError(400, f"{where}.{name}: unknown setting (known: {', '.join(_SAMPLER_KINDS)})")
        kind, optional = _SAMPLER_KINDS[name]
        if value is None and optional:
            values[name] = None
            continue
        values[name] = _check(value, kind, f"{where}.{name}")
        ok, message = RANGES.get(name, (lambda v: True, ""))
        if not ok(values[name]):
            raise RequestError(400, f"{where}.{name}: {message.format(value=values[name])}")
    sampler = replace(base, **values)
    if sampler.t_min > sampler.t_max:
        raise RequestError(400, f"{where}: needs t_min <= t_max (t_min {sampler.t_min}, t_max {sampler.t_max})")
    return sampler


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return well_formed(value)
    if isinstance(value, list) and all(isinstance(part, dict) and part.get("type") == "text"
                                       and isinstance(part.get("text"), str) for part in value):
        return well_formed("\n".join(part["text"] for part in value))
    raise RequestError(400, f"{where}: expected a string or a list of text parts (only text is supported)")


def parse_messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RequestError(400, "messages: expected a non-empty list of {role, content} objects")
    messages = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise RequestError(400, f"{where}: expected an object with role and content, got {_show(item)}")
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise RequestError(400, f"{where}.role: expected one of {', '.join(ROLES)}, got {_show(role)}")
        messages.append(Message(ROLES[role], _content(item.get("content"), f"{where}.content")))
    if messages[-1].role != "user":
        raise RequestError(400, "messages: the last message must be the user's (role \"user\")")
    return messages


def parse_request(body: Any, *, model: str, defaults: SamplerSettings, canvas_length: int) -> ChatRequest:
    """A chat-completion request body, checked; `defaults` are the server's sampler settings."""
    if not isinstance(body, dict):
        raise RequestError(400, f"the request body must be a JSON object, not {_KINDS.get(type(body), _show(body))}")
    asked = _field(body, "model", str, model)
    if asked != model:
        raise RequestError(404, f"the model {_show(asked)} does not exist: this server has {_show(model)}")
    if _field(body, "n", int, 1) != 1:
        raise RequestError(400, "n: this server answers with one choice per request (n = 1)")
    extension = _field(body, "dg_chat", dict, {})
    sampler = sampler_with(defaults, _field(extension, "sampler", dict, {}, "dg_chat.sampler"))
    changes: dict[str, Any] = {}
    if (seed := _field(body, "seed", int, None)) is not None:
        changes["seed"] = seed
    limit = _field(body, "max_completion_tokens", int, None)
    limit = _field(body, "max_tokens", int, None) if limit is None else limit
    if limit is not None:
        if limit < 1:
            raise RequestError(400, f"max_tokens: must be at least 1, got {limit}")
        changes["max_canvases"] = -(-limit // canvas_length)  # in integers: a limit of 400 digits is fine
    if (thinking := _field(extension, "thinking", bool, None, "dg_chat.thinking")) is not None:
        changes["thinking"] = thinking
    sampler = replace(sampler, **changes)
    if sampler.seed is not None and sampler.seed not in SEED_RANGE:
        raise RequestError(400, f"seed: must be from -2**63 to 2**64 - 1, got {sampler.seed}")
    return ChatRequest(
        messages=parse_messages(body.get("messages")), sampler=sampler,
        stream=_field(body, "stream", bool, False),
        include_usage=_field(_field(body, "stream_options", dict, {}), "include_usage", bool, False,
                             "stream_options.include_usage"),
        canvas=_field(extension, "canvas", bool, False, "dg_chat.canvas"))


# -- responses -------------------------------------------------------------------------------

def finish_reason(finished: TurnFinished) -> str:
    """"stop" if the answer ends with an end-of-turn token, "length" if it ran out of canvases."""
    return "length" if finished.stats.truncated else "stop"


def usage(stats: Stats) -> dict[str, int]:
    # dg-chat serve serves a local engine, which counts its tokens (only a remote one may not)
    assert stats.prompt_tokens is not None and stats.tokens is not None
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.tokens,
            "total_tokens": stats.prompt_tokens + stats.tokens}


def canvas_event(step: CanvasStep, piece: Callable[[int], str], end_ids: frozenset[int]) -> dict[str, Any]:
    """A dg_chat.canvas event: one denoising step; `end` marks the positions that hold an end-of-turn
    token (a client shows them as the quiet cells of the local canvas, not as "<|end|>" text)."""
    tokens = step.argmax.tolist()
    return {"block": step.block, "step": step.step, "max_steps": step.max_steps,
            "pieces": [piece(token) for token in tokens], "end": [token in end_ids for token in tokens],
            "accepted": step.accepted.tolist(), "changed": step.changed.tolist(),
            "mean_entropy": step.mean_entropy}


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One Server-Sent Event: `data:` a JSON object on one line, after an `event:` line if named."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@dataclass(frozen=True, slots=True)
class Reply:
    """What every object of one answer carries: its id, creation time and model."""

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{secrets.token_hex(12)}")
    created: int = field(default_factory=lambda: int(time.time()))

    def completion(self, finished: TurnFinished, finish: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": finished.answer}
        if finished.thinking:
            message["reasoning_content"] = finished.thinking
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage(finished.stats)}

    def chunk(self, delta: dict[str, str], block: BlockCommitted, finish: str | None = None,
              stats: Stats | None = None) -> dict[str, Any]:
        """The chunk of one block; the last one has `finish` (and `stats` for usage, when asked)."""
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                 "dg_chat": {"block": block.block, "steps": block.steps}}
        if stats is not None:
            chunk["usage"] = usage(stats)
        return chunk


class Deltas:
    """The new text of each block's chunk. BlockCommitted holds the whole text so far; what was
    sent is not sent again, and a block's incomplete last character (its bytes split across two
    blocks decode to U+FFFD) waits for the next block, so the deltas add up to the final text."""

    HELD_BACK = "\ufffd"
    FIELDS = (("reasoning_content", "thinking"), ("content", "answer"))
    """(delta key, BlockCommitted attribute)."""

    def __init__(self) -> None:
        self.sent = {key: "" for key, _ in self.FIELDS}
        self.started = False

    def next(self, block: BlockCommitted, last: bool) -> dict[str, str]:
        delta = {} if self.started else {"role": "assistant"}
        self.started = True
        for key, attribute in self.FIELDS:
            text = getattr(block, attribute)
            settled = text if last else text.rstrip(self.HELD_BACK)
            new = settled[len(self.sent[key]):] if settled.startswith(self.sent[key]) else ""
            self.sent[key] += new
            if new or key == "content":
                delta[key] = new
        return delta
