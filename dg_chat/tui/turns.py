"""Turn control: one answer at a time, generated on a thread worker and shown as its events come.

The worker body (`run_turn`) records every event in the store itself (dg_chat/recording.py), posts
canvas frames to the canvas widget as coalescable messages and every other event to the chat pane
(chat.py) as a `TurnEvent`; it never waits for the UI. `Turns.show` is what the UI does with a
TurnEvent: one `match` over the event types of dg_chat/engine/events.py. Neither needs a running app:
a test drives them with the scripted engine and stand-ins for the widgets (tests/tui/test_tui_turns.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from textual.message import Message

from dg_chat.config import SamplerSettings
from dg_chat.engine.events import BlockCommitted, CanvasStep, Event, PromptEncoded, TurnFailed, TurnFinished
from dg_chat.engine.turn_engine import TurnEngine
from dg_chat.errors import DgChatError
from dg_chat.recording import AnswerRecorder, Frame
from dg_chat.store import Store, finished_status
from dg_chat.text.canvas import block_count
from dg_chat.text.chat import Message as ChatMessage
from dg_chat.tui.failures import Notifies, describe
from dg_chat.tui.widgets.canvas import CanvasFrame, CanvasView
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.status import StatusBar

log = logging.getLogger(__name__)


class TurnEvent(Message, bubble=False):
    """An event of turn `turn` other than a canvas step (those go to the canvas), for the chat pane."""

    def __init__(self, turn: int, event: Event) -> None:
        super().__init__()
        self.turn = turn
        self.event = event


@dataclass(eq=False)
class Turn:
    id: int
    message_id: int
    view: MessageView
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    """Set by the worker when it has left the engine (a new turn may start)."""
    detached: bool = False
    """The user left this chat: the turn is being stopped and its view is gone."""


def run_turn(store: Store, turn: Turn, engine: TurnEngine, messages: Sequence[ChatMessage],
             sampler: SamplerSettings, *, to_canvas: Callable[[CanvasFrame], object],
             to_ui: Callable[[TurnEvent], object]) -> None:
    """Run one turn (on a thread worker): store each event, then hand it to the UI without waiting for it."""
    recorder = AnswerRecorder(store, turn.message_id)
    try:
        for event in engine.turn(messages, sampler, turn.cancel):
            recorder.record(event)
            match event:
                case CanvasStep():
                    to_canvas(CanvasFrame(turn.id, Frame.from_step(event)))
                case TurnFinished() | TurnFailed():
                    pass  # the result goes out below, once the engine is left
                case _:
                    to_ui(TurnEvent(turn.id, event))
        if recorder.result is None:
            raise DgChatError("the engine ended the turn without a result")
        result = recorder.result
    except Exception as exc:  # noqa: BLE001 - an engine crash must not lose the answer or the app
        result = TurnFailed(describe(exc))
        try:
            recorder.record(result)
        except Exception:  # the turn must still end, or the app waits for it for good
            log.exception("could not store a failed turn")
    # The result goes out once the engine is left, so the UI may start the next turn at once.
    turn.done.set()
    to_ui(TurnEvent(turn.id, result))


class Turns:
    """The app's turn: at most one runs. Each has a number, so that the late events of an earlier
    one (stopped when the user left its chat) are told apart."""

    def __init__(self) -> None:
        self.current: Turn | None = None
        self._count = 0

    def start(self, message_id: int, view: MessageView) -> Turn:
        self._count += 1
        self.current = Turn(self._count, message_id, view)
        return self.current

    def stop(self) -> bool:
        """Stop the running turn at its next step (False: none runs)."""
        if self.current is None:
            return False
        self.current.cancel.set()
        return True

    def detach(self) -> bool:
        """Stop the running turn, whose view is going away (False: none runs)."""
        if self.current is not None:
            self.current.detached = True
        return self.stop()

    def leave(self, timeout: float) -> bool:
        """Stop the running turn and wait up to `timeout` s for its worker to store it and leave the
        engine; whether the engine is free (to be closed)."""
        turn = self.current
        if turn is None:
            return True
        turn.cancel.set()
        return turn.done.wait(timeout=timeout)

    async def show(self, message: TurnEvent, canvas: CanvasView, status: StatusBar, notifier: Notifies) -> None:
        """Show an event of the running turn; the turn ends with its result."""
        turn, event = self.current, message.event
        if turn is None or message.turn != turn.id:
            return
        final = isinstance(event, (TurnFinished, TurnFailed))
        try:
            if not turn.detached:
                await show_event(turn.view, event, canvas, status, notifier)
            elif final:
                status.end_turn("ready")
                notifier.notify("The answer of the chat you left was stopped; what it had so far is kept.")
        finally:
            if final:
                self.current = None


async def show_event(view: MessageView, event: Event, canvas: CanvasView, status: StatusBar,
                     notifier: Notifies) -> None:
    """Show one event of a turn whose answer is `view` (a canvas step goes to the canvas, not here)."""
    match event:
        case PromptEncoded(n_tokens=n_tokens):
            status.set(prompt_tokens=n_tokens, state="denoising")
            if canvas.painted is None:
                canvas.wait_for_block(0)
        case BlockCommitted(block=block, final=final):
            canvas.flush()
            canvas.finish_block(block)
            if canvas.painted is None and not final:  # no canvas streamed (a server's whole blocks)
                canvas.wait_for_block(block + 1)
            await view.show_committed(event.thinking, event.answer)
        case TurnFinished(stats=stats, stopped=stopped):
            canvas.stop()
            canvas.display = False
            await view.finish(event.thinking, event.answer, finished_status(stopped), stats=stats.to_dict())
            status.end_turn("stopped" if stopped else "ready", tokens_per_second=stats.tokens_per_second,
                            steps_per_block=stats.steps_per_block, prompt_tokens=stats.prompt_tokens)
            if stats.truncated:
                if stats.context_full:
                    why = "The model's context is full: a new chat leaves room for longer answers."
                elif stats.server_limit:
                    why = "The server ended it at a length limit of its own (its max_tokens or context)."
                else:
                    why = (f"No end of turn within {block_count(stats.blocks)}: raise “Blocks per answer” in the "
                           "settings for longer answers.")
                notifier.notify(why, title="The answer was cut short", severity="warning", markup=False)
        case TurnFailed(error=error):
            canvas.stop()
            canvas.display = False
            await view.finish(view.thinking, view.content, "failed", error)
            status.end_turn("ready")
            notifier.notify(error, title="The answer failed", severity="error", timeout=30, markup=False)
        case CanvasStep():
            pass


def conversation(store: Store, chat_id: int | None, system_prompt: str,
                 before: int | None = None) -> list[ChatMessage]:
    """The chat as the model sees it: answers without text are left out unless the model ended
    them so itself (complete). `before`: only the messages stored before that id."""
    messages = [ChatMessage("system", system_prompt)] if system_prompt else []
    for stored in store.messages(chat_id) if chat_id is not None else []:
        if before is not None and stored.id >= before:
            break
        if stored.role == "user" or stored.content or stored.status == "complete":
            messages.append(ChatMessage(stored.role, stored.content, stored.thinking))  # type: ignore[arg-type]
    return messages
