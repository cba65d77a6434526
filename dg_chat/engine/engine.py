"""A loaded model ready to chat: backend + tokenizer + chat format, and the turn API that the
TUI, `dg-chat ask` and the benchmarks share."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend
from dg_chat.engine.events import Event, TurnFailed
from dg_chat.engine.generate import ContextOverflowError, generate
from dg_chat.engine.model_info import ModelInfo
from dg_chat.engine.turn_engine import ContextUse
from dg_chat.errors import DgChatError
from dg_chat.text.chat import ChatFormat, Message
from dg_chat.text.tokenizer import SpecialTokenText

log = logging.getLogger(__name__)


class Engine:
    """A local GGUF on one backend: a `TurnEngine` (engine/turn_engine.py), what the front ends use."""

    def __init__(self, backend: Backend, tokenizer: SpecialTokenText, chat: ChatFormat, *,
                 end_ids: frozenset[int], name: str, file: str = "", quant: str = "", mapped: Sequence[Path] = ()):
        """`mapped`: the files the weights are read from through memory maps (a split model's parts)."""
        self.backend = backend
        self.tokenizer = tokenizer
        self.chat = chat
        self.end_ids = end_ids
        self.name = name
        self.file = file
        self.quant = quant
        self._mapped = {path: _identity(path) for path in mapped}

    @property
    def info(self) -> ModelInfo:
        """The model that answers, as recorded with every answer."""
        return ModelInfo(self.name, self.file, self.quant, self.backend.name, self.backend.device)

    @property
    def thinks(self) -> bool:
        return self.chat.thinks

    def prompt_ids(self, messages: Sequence[Message], thinking: bool) -> list[int]:
        return self.chat.render(messages, thinking=thinking)

    def context_use(self, messages: Sequence[Message], thinking: bool) -> ContextUse:
        if overflow := self._certain_overflow(messages):
            return overflow
        last = self.tokenizer.encode(messages[-1].content) if messages else []
        return ContextUse(len(self.prompt_ids(messages, thinking)), len(last), self.backend.canvas_length,
                          self.backend.context_length)

    def _certain_overflow(self, messages: Sequence[Message]) -> ContextUse | None:
        """The context use of `messages` in lower bounds, where these alone show that the prompt
        cannot fit, else None: a message of many megabytes is refused at once, not after a minute of
        tokenizing it."""
        if not messages:
            return None
        fewest = self.tokenizer.fewest_tokens(messages[-1].content.strip())  # a chat template may trim it
        use = ContextUse(fewest, fewest, self.backend.canvas_length, self.backend.context_length, exact=False)
        return None if use.fits else use

    def turn(self, messages: Sequence[Message], sampler: SamplerSettings,
             cancel: threading.Event | None = None) -> Iterator[Event]:
        """Answer the conversation's last user message. Blocking: run it off the UI thread.
        Always ends with TurnFinished or TurnFailed; never raises for engine failures."""
        try:
            self._check_files()
            if overflow := self._certain_overflow(messages):
                raise ContextOverflowError(overflow.problem)
            yield from generate(self.backend, self.prompt_ids(messages, sampler.thinking), sampler,
                                end_ids=self.end_ids, parse=self.chat.parse, cancel=cancel)
        except DgChatError as exc:
            yield TurnFailed(str(exc))
        except torch.OutOfMemoryError:
            yield TurnFailed(f"out of memory on {self.backend.device}: use a smaller quant, fewer "
                             "canvases, or --device cpu")
        except Exception as exc:  # a failed turn must not take the app down (logged with its traceback)
            log.exception("turn failed")
            yield TurnFailed(f"internal error: {type(exc).__name__}: {exc}")

    def _check_files(self) -> None:
        """The weights are read through memory maps: a file rewritten in place to another size since
        it was loaded (cp, a converter) would end the process with SIGBUS. One replaced by another
        (mv) or deleted leaves the mapped one intact, and a touch changes nothing."""
        for path, then in self._mapped.items():
            now = _identity(path)
            if then is not None and now is not None and now[0] == then[0] and now != then:
                raise DgChatError(f"the model file {path} was rewritten after it was loaded: restart dg-chat to "
                                  "load it again")

    def close(self) -> None:
        self.backend.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, size) of a file; None if there is none to stat."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size
