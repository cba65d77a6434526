"""The one local engine behind the server: one thread runs its turns, one at a time, in the order
they were submitted; each turn's events reach the asyncio side of its request through a queue.
The engine is used on that thread only: a turn's prompt is checked there too (libllama, the
llama backend's tokenizer, must not run in two threads at once)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from dg_chat.config import SamplerSettings
from dg_chat.engine.engine import Engine
from dg_chat.engine.events import Event, TurnFailed
from dg_chat.errors import DgChatError
from dg_chat.text.chat import Message

log = logging.getLogger(__name__)

MAX_WAITING = 32
"""Turns that may wait behind the running one; a request beyond them is refused (Busy). A turn
whose client has left (its job cancelled) holds no place: it is skipped when its turn comes."""


class Busy(Exception):
    """The queue is full: MAX_WAITING turns are waiting."""

    def __init__(self, waiting: int):
        super().__init__(f"the server is busy: {waiting} requests are waiting")


@dataclass(eq=False)
class Job:
    """One queued turn. Setting `cancel` stops it at its next denoising step, or skips it if it
    has not started; either way its events end."""

    messages: list[Message]
    sampler: SamplerSettings
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    refused: str | None = field(default=None, init=False)
    """Set on the engine thread: why it refused the turn's prompt (longer than the context, roles
    the chat template refuses); None: it did not."""
    _events: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue, init=False)
    _taken: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def post(self, event: Event | None) -> None:
        """From the engine thread: hand an event (None: the end) to the request's loop."""
        self._call(self._events.put_nowait, event)

    def take(self) -> None:
        """From the engine thread: the turn runs now (or is refused, skipped, failed): `taken` returns."""
        self._call(self._taken.set)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancel.set()

    async def taken(self) -> str | None:
        """Wait until the engine takes the turn from the queue; why it refused it, or None."""
        await self._taken.wait()
        return self.refused

    async def events(self) -> AsyncIterator[Event]:
        """The turn's events as they come (`Engine.turn`'s stream; nothing for a skipped turn)."""
        while (event := await self._events.get()) is not None:
            yield event


class EngineWorker:
    """Runs the turns of one engine on one thread, first come first served."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._jobs: set[Job] = set()
        self._queued: set[Job] = set()
        """Submitted jobs the engine has not taken yet."""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dg-chat-engine", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Turns queued that the engine has not taken yet and whose clients still wait for them."""
        with self._lock:
            return self._still_waiting()

    def _still_waiting(self) -> int:
        return sum(not job.cancel.is_set() for job in self._queued)

    def submit(self, messages: list[Message], sampler: SamplerSettings) -> Job:
        """Queue a turn (from the event loop that will read its events); Busy if the queue is full."""
        job = Job(messages, sampler, asyncio.get_running_loop())
        with self._lock:
            waiting = self._still_waiting()
            if waiting >= MAX_WAITING:
                raise Busy(waiting)
            self._queued.add(job)
            self._jobs.add(job)
        self._queue.put(job)
        return job

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                self._queued.discard(job)
            try:
                if not job.cancel.is_set():
                    self._forget_context()
                    job.refused = self._refusal(job)
                    job.take()
                    if job.refused is None:
                        for event in self.engine.turn(job.messages, job.sampler, job.cancel):
                            job.post(event)
            except Exception as exc:  # turn() reports failures as events: a bug (logged); the request still ends
                log.exception("the engine thread failed a turn")
                job.post(TurnFailed(f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                job.take()  # a skipped turn, or a failure before it began, ends its response too
                job.post(None)
                with self._lock:
                    self._jobs.discard(job)

    def _refusal(self, job: Job) -> str | None:
        """Why the engine cannot answer the job's prompt (a 400 for its request), or None."""
        try:
            return self.engine.context_use(job.messages, job.sampler.thinking).problem
        except DgChatError as exc:  # a template that refuses the roles
            return str(exc)

    def _forget_context(self) -> None:
        """Start from an empty context: an answer depends on its own request only, never on the
        prompts before it (the whole prompt is encoded again, as `dg-chat ask` does)."""
        if self.engine.backend.cached_tokens:
            self.engine.backend.prefill([])

    def cancel_all(self) -> None:
        """Stop the running turn and skip the queued ones (the server is stopping)."""
        with self._lock:
            for job in self._jobs:
                job.cancel.set()

    def close(self) -> None:
        """Stop every turn and the thread (the engine itself stays open: its owner closes it)."""
        self.cancel_all()
        self._queue.put(None)
        self._thread.join()
