"""`dg-chat ask`: answer one prompt and exit; pipe-friendly.

The answer goes to stdout block by block as blocks commit; progress, the live canvas
(--show-steps) and the thinking go to stderr, so `dg-chat ask "..." > answer.md` keeps only the answer.
The first Ctrl-C stops the answer at the next step and keeps what the canvas holds (exit 130); a
second one, SIGTERM (`timeout`) or SIGHUP (a closed terminal) interrupt at once, keeping the
blocks committed. With --json, an answer that fails or is interrupted is still one JSON object.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from rich.console import Console
from rich.live import Live
from rich.text import Text

from dg_chat.engine.events import EMPTY_ANSWER, BlockCommitted, CanvasStep, TurnFailed, TurnFinished
from dg_chat.engine.loader import load_engine
from dg_chat.engine.turn_engine import TurnEngine, thinking_unavailable
from dg_chat.errors import DgChatError, DgChatWarning
from dg_chat.text.canvas import block_count, token_runs
from dg_chat.text.chat import Message
from dg_chat.text.sanitize import printable, visible, well_formed

MAX_STDIN = 16 * 2**20
"""Characters of a prompt read from stdin: far more than any model's context holds (a stream
without end, /dev/zero, must not fill the memory first)."""


def read_prompt(args: argparse.Namespace) -> str:
    """The prompt argument, or stdin when there is none or it is "-" (the usual convention)."""
    if args.prompt not in (None, "-"):
        return well_formed(args.prompt)
    if sys.stdin is None or sys.stdin.isatty():
        raise DgChatError("no prompt: give one as an argument or pipe it on stdin")
    prompt = sys.stdin.read(MAX_STDIN + 1)
    if len(prompt) > MAX_STDIN:
        raise DgChatError(f"the prompt on stdin is over {MAX_STDIN // 2**20} MiB, more than any model's context holds")
    return well_formed(prompt)


CANVAS_STYLES = {"accepted": "bright_white", "changed": "bold bright_white", "noise": "dim", "quiet": "dim"}


def canvas_text(step: CanvasStep, engine: TurnEngine) -> Text:
    """The canvas as the model sees it: accepted tokens bright, noise dim, fresh changes marked,
    end tokens and lone bytes as quiet cells, nothing past the first accepted end token."""
    text = Text(f"block {step.block + 1} · step {step.step}/{step.max_steps} · "
                f"mean entropy {step.mean_entropy:.3f}\n", style="bold")
    runs = token_runs(step, lambda token: visible(engine.tokenizer.piece(token)),
                      engine.backend.mask_token_id, engine.end_ids)
    for piece, kind in runs:
        text.append(piece, style=CANVAS_STYLES[kind])
    return text


@contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise KeyboardInterrupt, as a second Ctrl-C does, so that
    the terminal gets its cursor back and the blocks committed are printed before the exit."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run(args: argparse.Namespace) -> int:
    prompt = read_prompt(args)
    if not prompt.strip():
        raise DgChatError("the prompt is empty")
    with interrupt_on_termination():
        return _load_and_answer(args, prompt)


def _load_and_answer(args: argparse.Namespace, prompt: str) -> int:
    settings = args.settings
    err = Console(stderr=True, highlight=False)
    with err.status("loading the model…", spinner="dots") if err.is_terminal else nullcontext():
        engine = load_engine(settings)
    if warning := thinking_unavailable(engine, settings.sampler.thinking):
        warnings.warn(DgChatWarning(warning), stacklevel=1)
    messages = ([Message("system", settings.system_prompt)] if settings.system_prompt else [])
    messages.append(Message("user", prompt))
    try:
        return _answer(args, engine, messages, err)
    finally:
        engine.close()


EXIT_STOPPED = 130
"""Like an interrupt (128 + SIGINT): the answer was cut short by Ctrl-C."""


class AnswerStream:
    """The answer on stdout as blocks commit: only text that can no longer change is written, so
    what is printed is exactly the final answer, once. Held back until a later block or the end:
    an incomplete character (its bytes split across blocks decode to U+FFFD) and a trailing CR
    (of a CRLF whose LF is still to come)."""

    HELD_BACK = "\ufffd\r"

    def __init__(self) -> None:
        self.written = ""

    def _write(self, text: str) -> None:
        sys.stdout.write(printable(text))
        sys.stdout.flush()
        self.written += text

    def block(self, answer: str) -> None:
        settled = answer.rstrip(self.HELD_BACK)
        if settled.startswith(self.written):
            self._write(settled[len(self.written):])

    def finish(self, answer: str) -> None:
        if answer.startswith(self.written):
            self._write(answer[len(self.written):])
        else:  # earlier text changed after it was printed (never seen): print the answer whole
            self._write("\n" + answer)
        self.end_line()

    def end_line(self) -> None:
        """End the line that the answer left open, so that what follows (a final newline, or an
        error or "interrupted" on stderr) starts on its own line."""
        if self.written and not self.written.endswith("\n"):
            self._write("\n")


@contextmanager
def stop_on_interrupt(cancel: threading.Event) -> Iterator[None]:
    """While inside: the first SIGINT (Ctrl-C) sets `cancel`, a second one raises KeyboardInterrupt."""
    def interrupt(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _answer(args: argparse.Namespace, engine: TurnEngine, messages: list[Message], err: Console) -> int:
    settings = args.settings
    # The frames go to stderr only: Live must not take over stdout (the answer would end up on
    # stderr, a line per block). While they show on a terminal, the answer waits until the last
    # frame is cleared, or the frame's refresh would erase it: stdout may reach the same terminal,
    # directly or through a pipe (`| tee answer.md`).
    live = (Live(console=err, transient=True, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            if args.show_steps else None)
    hold = live is not None and err.is_terminal
    stream = AnswerStream()
    committed = thought = ""  # the answer and thinking of the blocks committed
    finished: TurnFinished | None = None
    cancel = threading.Event()
    try:
        with live or nullcontext(), stop_on_interrupt(cancel):
            for event in engine.turn(messages, settings.sampler, cancel):
                if isinstance(event, CanvasStep) and live:
                    live.update(canvas_text(event, engine), refresh=True)
                elif isinstance(event, BlockCommitted):
                    committed, thought = event.answer, event.thinking
                    if not (hold or args.json):
                        stream.block(committed)
                elif isinstance(event, TurnFailed):
                    raise DgChatError(event.error)
                elif isinstance(event, TurnFinished):
                    finished = event
    except (DgChatError, KeyboardInterrupt) as exc:
        if args.json:  # what was committed, and why it ends there (the error also goes to stderr)
            print(json.dumps({"text": committed, "thinking": thought, "stopped": isinstance(exc, KeyboardInterrupt),
                              "error": str(exc) or "interrupted"}))
        else:
            stream.block(committed)  # the partial answer stays (the frames are gone by now);
            stream.end_line()  # the error or "interrupted" goes below it
        raise
    assert finished is not None
    if args.json:  # ASCII: a raw C1 control, DEL or bidi override of the model's would reach the terminal
        prompt_ids = engine.prompt_ids(messages, settings.sampler.thinking)
        print(json.dumps({
            "text": finished.answer, "thinking": finished.thinking, "stopped": finished.stopped,
            "truncated": finished.stats.truncated,
            # null, both, where a server tokenizes: no ids are known here
            "prompt_ids": prompt_ids, "token_ids": finished.token_ids if prompt_ids is not None else None,
            "backend": engine.backend.name, "model": engine.info.to_dict(),
            "stats": finished.stats.to_dict(),
        }))
        return EXIT_STOPPED if finished.stopped else 0
    stream.finish(finished.answer)
    stats = finished.stats
    if not stream.written:
        sys.stdout.write("\n")
        if not (finished.stopped or stats.truncated):
            err.print(EMPTY_ANSWER, markup=False)
    if finished.thinking:
        err.print(Text(printable(finished.thinking), style="dim"))
    blocks = block_count(stats.blocks)
    # what a remote server did not report (None) is said so or left out, never shown as 0
    tokens = f"{stats.tokens} tokens" if stats.tokens is not None else "tokens: not reported by the server"
    steps = f" · {stats.steps_per_block:.1f} steps/block" if stats.steps_per_block is not None else ""
    speed = f" · {stats.tokens_per_second:.1f} tok/s" if stats.tokens_per_second is not None else ""
    seed = f"seed {stats.seed}" + ("" if stats.seed_confirmed else " (sent; the server may not use it)")
    # one line even where stderr is a file or a narrow terminal (rich would wrap it at 80 columns)
    err.print(f"[dim]{tokens} · {blocks}{steps}{speed} · first block {stats.first_block_seconds:.2f} s · "
              f"{seed}[/dim]", soft_wrap=True)
    if stats.context_full:
        err.print(f"cut short: the model's context is full after {blocks}; a shorter prompt leaves room "
                  "for a longer answer", markup=False, soft_wrap=True)
    elif stats.server_limit:
        err.print("cut short: the server ended the answer at a length limit of its own (its max_tokens or "
                  "context)", markup=False, soft_wrap=True)
    elif stats.truncated:
        err.print(f"cut short: no end of turn within {blocks} (--max-canvases raises the limit)",
                  markup=False, soft_wrap=True)
    if finished.stopped:
        err.print("stopped: the partial answer is above" if finished.answer else "stopped before any text",
                  markup=False)
        return EXIT_STOPPED
    return 0
