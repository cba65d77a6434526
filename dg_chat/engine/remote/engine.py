"""`RemoteEngine`: a model on an OpenAI-compatible server, with the turn API of the local Engine.

A turn is one streamed chat completion. Each chunk with text (or marked as a block by dg-chat's
server) is one committed canvas (vLLM sends one per canvas; a token-streaming server's chunks
become small blocks): a BlockCommitted whose thinking comes from `reasoning_content`. Where the
server sends dg-chat's `dg_chat.canvas` events, each is a CanvasStep. The server sends text
pieces, not token ids: `PieceVocabulary` numbers the pieces so that a CanvasStep is what it is
for a local model, and consumers look them up by number as they do with a tokenizer. No local
tokenizer means no prompt token ids (`prompt_ids` is None).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from httpx_sse import ServerSentEvent

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.events import (
    BlockCommitted,
    CanvasStep,
    Event,
    PromptEncoded,
    Stats,
    TurnFailed,
    TurnFinished,
)
from dg_chat.engine.model_info import ModelInfo
from dg_chat.engine.remote.client import RemoteClient, RemoteError, StreamCut, server_message
from dg_chat.engine.remote.spec import api_key, parse_remote
from dg_chat.engine.turn_engine import Noise
from dg_chat.errors import DgChatError
from dg_chat.text.chat import Message
from dg_chat.text.sanitize import well_formed

log = logging.getLogger(__name__)

ROLES = {"system": "system", "user": "user", "model": "assistant"}
CANVAS_EVENT = "dg_chat.canvas"
EXTENSION_FIELDS = ("chat_template_kwargs", "dg_chat")
"""Request fields beyond OpenAI's own, which a strict server refuses."""
NO_TOKENS = np.zeros(0, dtype=np.int32)
END = -1
"""The number of a canvas position that dg-chat's server marks as an end-of-turn token (`end`)."""


class PieceVocabulary:
    """The text pieces of remote canvases, numbered in the order they first arrive (the stand-in
    for a tokenizer: `piece(number)` is what a canvas position shows)."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._numbers: dict[str, int] = {}

    def numbers(self, pieces: Sequence[str]) -> np.ndarray:
        """int32 numbers of `pieces`; a new piece gets the next number."""
        out = np.empty(len(pieces), dtype=np.int32)
        for i, piece in enumerate(pieces):
            number = self._numbers.get(piece)
            if number is None:
                number = self._numbers[piece] = len(self._pieces)
                self._pieces.append(piece)
            out[i] = number
        return out

    def piece(self, number: int) -> str:
        return self._pieces[number] if 0 <= number < len(self._pieces) else "?"


@dataclass(frozen=True, slots=True)
class Chunk:
    """What a turn reads of one chat.completion.chunk."""

    answer: str
    thinking: str
    finish: str | None
    """finish_reason: set on the last chunk of an answer."""
    marked: bool
    """dg-chat's server marks every block's chunk (`dg_chat.block`), even one whose text is held back."""
    steps: int
    """Denoising steps of the block, from dg-chat's extension (0: not said)."""

    @property
    def is_block(self) -> bool:
        """The chunk of a committed canvas (vLLM: one with text; not the role, finish or usage chunk)."""
        return bool(self.answer or self.thinking or self.marked)


@dataclass(frozen=True, slots=True)
class RemoteServer:
    """What consumers read of an engine's backend, for a model that runs on a server."""

    device: str
    """host:port of the server."""
    name: str = "openai"
    noise: Noise | None = None
    """Unknown here: the settings screen offers every sampler knob (dg-chat's own server uses them)."""
    mask_token_id: int | None = None


def request_body(model: str, messages: Sequence[Message], sampler: SamplerSettings, seed: int,
                 extensions: bool = True) -> dict[str, Any]:
    """A streamed chat completion with usage, the seed, and (`extensions`) thinking for vLLM's chat
    template and dg-chat's extension (live canvases, every sampler setting) for dg-chat's own server.
    No `max_tokens`: dg-chat's server takes `max_canvases` from the sampler, others use their own
    limit (a canvas's length is not known here)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": ROLES[m.role], "content": m.content} for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "seed": seed,
    }
    if extensions:
        body["chat_template_kwargs"] = {"enable_thinking": sampler.thinking}
        body["dg_chat"] = {"canvas": True, "sampler": {**asdict(sampler), "seed": seed}, "thinking": sampler.thinking}
    return body


def refuses_extensions(error: RemoteError) -> bool:
    """A strict server's refusal of a field it does not know, naming one of EXTENSION_FIELDS: a 400
    (OpenAI: "Unrecognized request argument supplied: dg_chat") or a 422 (a FastAPI server whose
    request model forbids extra fields: "extra_forbidden" at ["body", "dg_chat"])."""
    return error.status in (400, 422) and any(name in error.said for name in EXTENSION_FIELDS)


def count(value: Any) -> int | None:
    """A token count of a usage object; None where the server left it out (or sent null)."""
    return None if value is None else int(value)


def malformed(data: str) -> str:
    """A short quote of a bad event's data."""
    return repr(data if len(data) <= 60 else data[:59] + "…")


class RemoteEngine:
    """The turn API of `dg_chat.engine.engine.Engine` over HTTP."""

    def __init__(self, client: RemoteClient, model: str) -> None:
        self.client = client
        self.name = model
        self.tokenizer = PieceVocabulary()
        self.backend = RemoteServer(client.spec.host)
        self.end_ids: frozenset[int] = frozenset({END})
        self.strict = False
        """The server refused the extension fields once: no request carries them any more."""

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(self.name, self.client.spec.label(self.name), "", self.backend.name, self.backend.device)

    @property
    def thinks(self) -> None:
        """Not known here: the server renders the prompt (and asks the template for thinking)."""
        return None

    def prompt_ids(self, messages: Sequence[Message], thinking: bool) -> None:
        """None: the server renders and tokenizes the prompt."""

    def context_use(self, messages: Sequence[Message], thinking: bool) -> None:
        """None: the server checks its context (and a turn it refuses fails with its reason)."""

    def turn(self, messages: Sequence[Message], sampler: SamplerSettings,
             cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answer the conversation's last user message, as Engine.turn does: blocking, always ends
        with TurnFinished or TurnFailed. A stop closes the stream; the blocks received are kept."""
        blocks = 0
        try:
            with closing(self._turn(messages, sampler, cancel)) as events:
                for event in events:
                    blocks += isinstance(event, BlockCommitted)
                    yield event
        except StreamCut as exc:
            yield TurnFailed(f"{exc}; the partial answer is kept" if blocks else str(exc))
        except DgChatError as exc:
            yield TurnFailed(str(exc))
        except Exception as exc:  # a failed turn must not take the app down
            log.exception("remote turn failed")
            yield TurnFailed(f"internal error: {type(exc).__name__}: {exc}")

    def _turn(self, messages: Sequence[Message], sampler: SamplerSettings,
              cancel: threading.Event | None) -> Generator[Event, None, None]:
        seed = secrets.randbits(63) if sampler.seed is None else sampler.seed
        # counts stay unknown unless the server reports them (its usage chunk); the text pieces it
        # streams are not tokens. The seed is only a request until dg-chat's server answers.
        stats = Stats(prompt_tokens=None, tokens=None, seed=seed, seed_confirmed=False)
        label = self.client.label
        thinking = answer = ""
        steps = 0  # of the block being denoised, from its canvas events
        ended = ours = False  # ours: dg-chat's server, which marks its blocks
        started = time.perf_counter()
        # closed on leaving the loop ([DONE], a stop, a bad event): its connection and watcher thread
        # end then, not whenever the turn's generator is collected
        with closing(self._stream(messages, sampler, seed, cancel)) as events:
            for number, event in enumerate(events):
                if number == 0:  # the server has read the prompt
                    stats.prompt_seconds = time.perf_counter() - started
                    yield PromptEncoded(None, stats.prompt_seconds)
                if event.data == "[DONE]":
                    ended = True
                    break
                if event.event == CANVAS_EVENT:
                    step = self._canvas_step(self._json(event.data), len(stats.steps))
                    steps = step.step
                    yield step
                elif event.event == "error":
                    raise RemoteError(f"{label} failed mid-answer: {self.client.clip(server_message(event.data))}")
                elif event.event in ("", "message"):  # a standard chunk (other events, a "ping" say: skipped)
                    chunk = self._chunk(self._json(event.data), stats)
                    ended = ended or chunk.finish is not None
                    stats.truncated = stats.truncated or chunk.finish == "length"
                    ours = ours or chunk.marked
                    if chunk.is_block:
                        thinking, answer = thinking + chunk.thinking, answer + chunk.answer
                        stats.steps.append(chunk.steps or steps)
                        steps = 0
                        # dg-chat's server marks its blocks, and seeds its sampler with the request's seed
                        stats.seed_confirmed = stats.seed_confirmed or chunk.marked
                        if len(stats.steps) == 1:
                            stats.first_block_seconds = time.perf_counter() - started
                        yield BlockCommitted(len(stats.steps) - 1, NO_TOKENS, stats.steps[-1], thinking, answer,
                                             final=chunk.finish is not None)
                if cancel is not None and cancel.is_set():  # what has arrived is kept; the rest is not read
                    break
        stopped = cancel is not None and cancel.is_set() and not ended
        if not ended and not stopped:
            raise StreamCut(f"the stream from {label} was cut mid-answer (it ended after {len(stats.steps)} "
                            "block(s) without finishing)")
        stats.seconds = time.perf_counter() - started - stats.prompt_seconds
        stats.server_limit = stats.truncated and not ours
        yield TurnFinished(answer=answer, thinking=thinking, token_ids=[], stats=stats, stopped=stopped)

    def _stream(self, messages: Sequence[Message], sampler: SamplerSettings, seed: int,
                cancel: threading.Event | None) -> Generator[ServerSentEvent, None, None]:
        """The events of the turn's request. A strict server (OpenAI's own) answers 400 to fields it
        does not know: when it refuses the extension fields, the request is sent once more without
        them, and so is every later one (blocks only then, no live canvas)."""
        if not self.strict:
            try:
                yield from self.client.stream(request_body(self.name, messages, sampler, seed), cancel)
                return
            except RemoteError as exc:  # a status comes before any event: nothing was yielded yet
                if not refuses_extensions(exc):
                    raise
            self.strict = True
            log.info("%s refuses dg-chat's extension fields: requests go without them", self.client.label)
        yield from self.client.stream(request_body(self.name, messages, sampler, seed, extensions=False), cancel)

    def _json(self, data: str) -> dict[str, Any]:
        """The JSON object of an event's data."""
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise RemoteError(f"{self.client.label} sent a malformed event: {malformed(self.client.clip(data))}")
        return value

    def _chunk(self, data: dict[str, Any], stats: Stats) -> Chunk:
        """A chat.completion.chunk; its usage goes into `stats`."""
        error = data.get("error")
        if error is not None:  # vLLM and dg-chat's server report a failure inside the stream
            said = error.get("message") if isinstance(error, dict) else error
            raise RemoteError(f"{self.client.label} failed mid-answer: {self.client.clip(str(said))}")
        try:
            usage = data.get("usage")
            if usage is not None:
                stats.prompt_tokens = count(usage.get("prompt_tokens"))
                stats.tokens = count(usage.get("completion_tokens"))
            extension = data.get("dg_chat") or {}
            choices = data.get("choices") or [{}]  # none: the usage chunk
            delta = choices[0].get("delta") or {}
            chunk = Chunk(answer=delta.get("content") or "",
                          thinking=delta.get("reasoning_content") or delta.get("reasoning") or "",
                          finish=choices[0].get("finish_reason"), marked="block" in extension,
                          steps=int(extension.get("steps") or 0))
            if not (isinstance(chunk.answer, str) and isinstance(chunk.thinking, str)
                    and isinstance(chunk.finish, str | None)):
                raise TypeError
            # a lone surrogate (a JSON "\ud83d": half an emoji split over two chunks) must not reach the history
            return replace(chunk, answer=well_formed(chunk.answer), thinking=well_formed(chunk.thinking))
        except (AttributeError, TypeError, KeyError, IndexError, ValueError, OverflowError):  # int(1e400)
            raise RemoteError(f"{self.client.label} sent a malformed chunk: "
                              f"{malformed(self.client.clip(json.dumps(data)))}") from None

    def _canvas_step(self, data: dict[str, Any], block: int) -> CanvasStep:
        """A `dg_chat.canvas` event as a CanvasStep of block `block` (the blocks received so far)."""
        try:
            pieces, accepted, changed = data["pieces"], data["accepted"], data["changed"]
            end = data.get("end") or [False] * len(pieces)  # an older dg-chat server marks no end tokens
            if not (isinstance(pieces, list) and all(isinstance(p, str) for p in pieces)
                    and len(pieces) == len(accepted) == len(changed) == len(end)):
                raise ValueError
            numbers = self.tokenizer.numbers([well_formed(piece) for piece in pieces])
            numbers[np.asarray(end, dtype=bool)] = END
            return CanvasStep(block=block, step=int(data["step"]), max_steps=int(data["max_steps"]),
                              tokens=numbers, argmax=numbers, accepted=np.asarray(accepted, dtype=bool),
                              changed=np.asarray(changed, dtype=bool), mean_entropy=float(data["mean_entropy"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise RemoteError(f"{self.client.label} sent a malformed canvas event: "
                              f"{malformed(self.client.clip(json.dumps(data)))}") from None

    def close(self) -> None:
        self.client.close()


def connect(settings: Settings) -> RemoteEngine:
    """The engine of `settings.model` (`openai:<base-url>#<model>`); without a model, the first one
    the server lists. Makes no request when the model is named."""
    spec = parse_remote(settings.model)
    client = RemoteClient(spec, api_key(settings.api_key_env), settings.api_key_env)
    try:
        model = spec.model or _first_model(client)
    except BaseException:
        client.close()
        raise
    return RemoteEngine(client, model)


def _first_model(client: RemoteClient) -> str:
    models = client.models()
    if not models:
        raise RemoteError(f"{client.label} serves no model")
    return models[0]
