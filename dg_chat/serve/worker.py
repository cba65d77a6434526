"""The one local engine behind the server: one thread runs its turns, one at a time, in the order
they were submitted; each turn's events reach the asyncio side of its request through a queue."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from dg_chat.config import SamplerSettings
from dg_chat.engine.engine import Engine
from dg_chat.engine.events import Event, TurnFailed
from dg_chat.text.chat import Message

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One queued turn. Setting `cancel` stops it at its next denoising step, or skips it if it
    has not started; either way its events end."""

    messages: list[Message]
    sampler: SamplerSettings
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    _events: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue, init=False)

    def post(self, event: Event | None) -> None:
        """From the engine thread: hand an event (None: the end) to the request's loop."""
        try:
            self.loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancel.set()

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
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dg-chat-engine", daemon=True)
        self._thread.start()

    def submit(self, messages: list[Message], sampler: SamplerSettings) -> Job:
        """Queue a turn (from the event loop that will read its events)."""
        job = Job(messages, sampler, asyncio.get_running_loop())
        with self._lock:
            self._jobs.add(job)
        self._queue.put(job)
        return job

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                if not job.cancel.is_set():
                    self._forget_context()
                    for event in self.engine.turn(job.messages, job.sampler, job.cancel):
                        job.post(event)
            except Exception as exc:  # turn() reports failures as events: a bug (logged); the request still ends
                log.exception("the engine thread failed a turn")
                job.post(TurnFailed(f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                job.post(None)
                with self._lock:
                    self._jobs.discard(job)

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
