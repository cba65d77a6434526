"""A scripted engine, a `TurnEngine` as dg_chat.engine.engine.Engine is (tests/test_turn_engine.py checks
both against dg_chat/engine/turn_engine.py), for TUI tests.

Each turn is deterministic: the reply text (a function of the conversation) is split into
word tokens, laid out in canvases, and every canvas is "denoised" over a few steps: random
noise tokens are accepted position by position until the canvas holds the reply. It honours
`cancel` between steps as the real block loop does (the cancelled block's last argmax, cut at
its first end token, ends the answer), can fail or crash in a given block, and can pause after
a given step so a test can look at (or snapshot) the canvas mid-denoise.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dg_chat.config import SamplerSettings, Settings
from dg_chat.engine.events import BlockCommitted, CanvasStep, Event, PromptEncoded, Stats, TurnFailed, TurnFinished
from dg_chat.engine.model_info import ModelInfo
from dg_chat.engine.turn_engine import ContextUse
from dg_chat.errors import DgChatError
from dg_chat.text.chat import Message

NOISE = 200
"""Ids below this are scrambled noise pieces; word pieces are appended after them."""
EOS = NOISE
EOS_PIECE = "<eos>"


class FakeTokenizer:
    def __init__(self) -> None:
        rng = random.Random(7)
        alphabet = "qxzjkvwþðæøßłŋžčħĳɣʃʒλψωжщџאגק" + "ạẍǫȿɐ"
        self.pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(NOISE)]
        self.pieces.append(EOS_PIECE)
        self._ids: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in re.findall(r"\s*\S+|\s+", text):
            if word not in self._ids:
                self._ids[word] = len(self.pieces)
                self.pieces.append(word)
            ids.append(self._ids[word])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids if i >= NOISE and i != EOS)

    def piece(self, token_id: int) -> str:
        return self.pieces[token_id].replace("\n", "↵")


@dataclass
class FakeBackend:
    canvas_length: int = 48
    name: str = "torch"
    device: str = "cpu"
    noise: str = "uniform"
    context_length: int = 4096
    mask_token_id: int | None = None


def echo(messages: Sequence[Message]) -> str:
    return f"You said: {messages[-1].content}"


class ScriptedEngine:
    name = "fake-dg"
    end_ids = frozenset({EOS})
    thinks = True

    def __init__(self, reply: Callable[[Sequence[Message]], str] = echo, *, canvas_length: int = 48,
                 steps: int = 6, fail_in_block: int | None = None, crash_in_block: int | None = None,
                 pause_at: tuple[int, int] | None = None, step_delay: float = 0.0,
                 context_blocks: int | None = None) -> None:
        self.reply = reply
        self.context_blocks = context_blocks
        """How many blocks the context has room for (None: as many as wanted)."""
        self.tokenizer = FakeTokenizer()
        self.backend = FakeBackend(canvas_length)
        self.steps = steps
        self.fail_in_block = fail_in_block
        self.crash_in_block = crash_in_block
        self.pause_at = pause_at
        self.step_delay = step_delay
        self.paused = threading.Event()
        """Set while the engine waits at `pause_at`; set `resume` (or cancel) to go on."""
        self.resume = threading.Event()
        self.requests: list[tuple[list[Message], SamplerSettings]] = []
        self.closed = False

    @property
    def info(self) -> ModelInfo:
        backend = self.backend
        return ModelInfo(self.name, f"/models/{self.name}-Q4_K_M.gguf", "Q4_K_M", backend.name, backend.device)

    def close(self) -> None:
        self.closed = True

    def prompt_ids(self, messages: Sequence[Message], thinking: bool) -> list[int]:
        return [token for m in messages for token in [*self.tokenizer.encode(m.content), EOS]]

    def context_use(self, messages: Sequence[Message], thinking: bool) -> ContextUse:
        last = self.tokenizer.encode(messages[-1].content) if messages else []
        return ContextUse(len(self.prompt_ids(messages, thinking)), len(last), self.backend.canvas_length,
                          self.backend.context_length)

    def turn(self, messages: Sequence[Message], sampler: SamplerSettings,
             cancel: threading.Event | None = None) -> Iterator[Event]:
        self.requests.append((list(messages), sampler))
        rng = np.random.default_rng(sampler.seed or 0)
        tok = self.tokenizer
        thinking = "First I read the question, then I answer it briefly." if sampler.thinking else ""
        thinking_ids, answer_ids = tok.encode(thinking), tok.encode(self.reply(messages)) + [EOS]
        wanted = thinking_ids + answer_ids
        length = self.backend.canvas_length
        room = self.context_blocks or math.inf
        n_blocks = min(math.ceil(len(wanted) / length), sampler.max_canvases, room)
        steps = min(self.steps, sampler.max_steps)
        prompt_tokens = sum(len(tok.encode(m.content)) + 3 for m in messages)
        yield PromptEncoded(prompt_tokens, 0.01)

        committed: list[int] = []

        def texts() -> tuple[str, str]:
            return tok.decode(committed[:len(thinking_ids)]), tok.decode(committed[len(thinking_ids):])

        def stats(blocks_done: int) -> Stats:  # deterministic timings: snapshots show them
            return Stats(prompt_tokens, 0.01, len(committed), [steps] * blocks_done, 0.25 * max(blocks_done, 1))

        def cut(tokens: np.ndarray) -> np.ndarray:
            return tokens[: int(np.argmax(tokens == EOS)) + 1] if (tokens == EOS).any() else tokens

        for block in range(n_blocks):
            target = np.array((wanted[block * length:(block + 1) * length] + [EOS] * length)[:length], np.int32)
            order = rng.permutation(length)
            argmax = np.full(length, -1, np.int32)
            for step in range(1, steps + 1):
                if cancel is not None and cancel.is_set():
                    blocks_done = block
                    if step > 1:
                        kept = cut(argmax)
                        committed.extend(int(t) for t in kept)
                        blocks_done += 1
                        thinking_text, answer_text = texts()
                        yield BlockCommitted(block, kept, step - 1, thinking_text, answer_text, final=True)
                    thinking_text, answer_text = texts()
                    yield TurnFinished(answer_text, thinking_text, list(committed), stats(blocks_done), stopped=True)
                    return
                if block == self.fail_in_block and step == steps // 2:
                    yield TurnFailed("CUDA out of memory: tried to allocate 2.00 GiB (GPU 0: 24 GiB total)")
                    return
                if block == self.crash_in_block and step == steps // 2:
                    raise RuntimeError("fake engine crashed")
                accepted = np.zeros(length, bool)
                accepted[order[: math.ceil(length * step / steps)]] = True
                noise = rng.integers(0, NOISE, length, dtype=np.int32)
                guess = np.where(accepted | (rng.random(length) < step / steps), target, noise)
                changed = guess != argmax
                argmax = guess
                yield CanvasStep(block, step, steps, np.where(accepted, target, noise), argmax.copy(),
                                 accepted, changed, 2.5 * (1 - step / steps) + 0.002)
                if self.pause_at == (block, step):
                    self.paused.set()
                    while not self.resume.wait(0.01):
                        if cancel is not None and cancel.is_set():
                            break
                    self.paused.clear()
                if self.step_delay:
                    time.sleep(self.step_delay)
            kept = cut(target)
            committed.extend(int(t) for t in kept)
            thinking_text, answer_text = texts()
            yield BlockCommitted(block, kept, steps, thinking_text, answer_text, final=block == n_blocks - 1)
        thinking_text, answer_text = texts()
        done = stats(n_blocks)
        done.truncated = EOS not in committed
        done.context_full = done.truncated and n_blocks == room
        yield TurnFinished(answer_text, thinking_text, list(committed), done)


def factory(engine: ScriptedEngine) -> Callable[[Settings], ScriptedEngine]:
    return lambda settings: engine


def failing_factory(error: str = "model file not found: /models/missing.gguf") -> Callable[[Settings], ScriptedEngine]:
    def load(settings: Settings) -> ScriptedEngine:
        raise DgChatError(error)

    return load
