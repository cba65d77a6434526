"""How the app obtains its engine: a factory called on a thread of its own (slow: weights are
loaded there), whose outcome comes back to the UI as a message. Tests inject a factory of their own."""

from __future__ import annotations

import threading
from collections.abc import Callable

from textual.message import Message
from textual.message_pump import MessagePump

from dg_chat.config import Settings
from dg_chat.engine.turn_engine import TurnEngine
from dg_chat.tui.failures import describe

EngineFactory = Callable[[Settings], TurnEngine]


def default_engine_factory(settings: Settings) -> TurnEngine:
    # Imported when called: loading torch and the engine is slow, and tests inject their own.
    from dg_chat.engine.loader import load_engine  # noqa: PLC0415

    return load_engine(settings)


class EngineLoaded(Message):
    def __init__(self, engine: TurnEngine) -> None:
        super().__init__()
        self.engine = engine


class EngineFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


def load(factory: EngineFactory, settings: Settings) -> EngineLoaded | EngineFailed:
    """Call `factory` (on a loading thread): the engine, or why there is none, as a message for the app."""
    try:
        return EngineLoaded(factory(settings))
    except Exception as exc:  # noqa: BLE001 - missing model, corrupt file, OOM: the app stays usable
        return EngineFailed(describe(exc))


def load_in_background(factory: EngineFactory, settings: Settings, app: MessagePump) -> None:
    """Post `load(factory, settings)` to `app` from a daemon thread: quitting the app does not wait
    for a load (a Textual thread worker would hold the exit until the weights are in). An engine
    that arrives after the app has closed is closed at once."""
    def run() -> None:
        message = load(factory, settings)
        if not app.post_message(message) and isinstance(message, EngineLoaded):
            message.engine.close()

    threading.Thread(target=run, name="dg-chat-load", daemon=True).start()
