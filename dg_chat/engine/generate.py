"""The block loop shared by all backends: prompt -> canvases -> events.

    prefill(prompt)
    for each block: [commit previous canvas] -> denoise a canvas step by step -> cut at the
    first end token -> BlockCommitted; stop at an end token or after max_canvases blocks.

Cancellation is checked between steps; a cancelled block's argmax canvas of its last step (cut at
the first end token) ends the answer as its partial last block, and never enters the context.
Semantics follow transformers' DiffusionGemmaGenerationMixin.generate: a committed canvas enters
the context whole (all its argmax tokens), and the output keeps tokens up to and including the
first end token.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from dg_chat.config import SamplerSettings
from dg_chat.engine.backends.base import Backend
from dg_chat.engine.events import BlockCommitted, Event, PromptEncoded, Stats, TurnFinished
from dg_chat.engine.sampling import BlockSampler, EntropyBoundSampler
from dg_chat.engine.turn_engine import context_overflow
from dg_chat.errors import DgChatError

Parse = Callable[[Sequence[int]], tuple[str, str]]


class ContextOverflowError(DgChatError):
    pass


def make_generator(seed: int | None, device: str) -> tuple[torch.Generator, int]:
    """A private generator seeded like `torch.manual_seed(seed)`; a fresh seed if None."""
    seed = secrets.randbits(63) if seed is None else seed
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator, seed


def block_sampler(backend: Backend, settings: SamplerSettings, generator: torch.Generator) -> BlockSampler:
    if backend.noise == "uniform" and backend.fused_sampling:
        from dg_chat.engine.backends.torch_dg.fused_sampler import FusedEntropyBoundSampler  # noqa: PLC0415

        return FusedEntropyBoundSampler(settings, vocab_size=backend.vocab_size,
                                        canvas_length=backend.canvas_length, generator=generator)
    if backend.noise == "uniform":
        return EntropyBoundSampler(settings, vocab_size=backend.vocab_size,
                                   canvas_length=backend.canvas_length, generator=generator)
    from dg_chat.engine.mask_sampling import MaskSampler  # noqa: PLC0415 - only mask models need it

    return MaskSampler(settings, backend=backend, generator=generator)


def cut_at_end(tokens: list[int], end_ids: frozenset[int]) -> tuple[list[int], bool]:
    """Tokens up to and including the first end token, and whether one was found."""
    for i, token in enumerate(tokens):
        if token in end_ids:
            return tokens[: i + 1], True
    return tokens, False


def check_context(backend: Backend, n_prompt: int) -> int:
    """How many canvases fit after the prompt; an error if not even one does."""
    if problem := context_overflow(n_prompt, backend.canvas_length, backend.context_length):
        raise ContextOverflowError(problem)
    return (backend.context_length - n_prompt) // backend.canvas_length


def generate(backend: Backend, prompt_ids: Sequence[int], settings: SamplerSettings, *,
             end_ids: frozenset[int], parse: Parse,
             cancel: threading.Event | None = None) -> Iterator[Event]:
    """Run one turn. Raises on backend failures (the Engine turns them into TurnFailed)."""
    room = check_context(backend, len(prompt_ids))
    max_canvases = min(settings.max_canvases, room)
    generator, seed = make_generator(settings.seed, backend.device)
    stats = Stats(prompt_tokens=len(prompt_ids), seed=seed)

    started = time.perf_counter()
    encoded = backend.prefill(prompt_ids)
    stats.prompt_seconds = time.perf_counter() - started
    yield PromptEncoded(encoded, stats.prompt_seconds)

    sampler = block_sampler(backend, settings, generator)
    kept: list[int] = []
    thinking = answer = ""
    previous: torch.Tensor | None = None
    started = time.perf_counter()
    stopped = ended = False
    for block in range(max_canvases):
        if previous is not None:
            backend.commit(previous)
        result = last = None
        denoiser = sampler.denoise_block(backend, block)
        while not (cancel is not None and cancel.is_set()):
            try:
                last = next(denoiser)
            except StopIteration as done:
                result = done.value
                break
            yield last
        if result is None:  # cancelled between two steps: the block's current best guess is kept
            denoiser.close()
            stopped = True
            if last is None:
                break
            tokens, ended = cut_at_end(last.argmax.tolist(), end_ids)
            steps = last.step
        else:
            tokens, ended = cut_at_end(result.tokens.tolist(), end_ids)
            steps = result.steps
        kept += tokens
        stats.steps.append(steps)
        if block == 0:
            stats.first_block_seconds = stats.prompt_seconds + time.perf_counter() - started
        thinking, answer = parse(kept)
        final = stopped or ended or block == max_canvases - 1
        yield BlockCommitted(block=block, tokens=torch.tensor(tokens, dtype=torch.int32).numpy(),
                             steps=steps, thinking=thinking, answer=answer, final=final)
        if final or result is None:  # (a cancelled block is final)
            break
        previous = result.tokens
    stats.tokens = len(kept)
    stats.seconds = time.perf_counter() - started
    stats.truncated = not (stopped or ended)
    stats.context_full = stats.truncated and stats.blocks == room
    yield TurnFinished(answer=answer, thinking=thinking, token_ids=kept, stats=stats, stopped=stopped)
