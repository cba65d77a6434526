"""Chats deleted in the app stay in the store for a few seconds, so that a delete can be undone."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress

from textual.timer import Timer

from dg_chat.store import Store, StoreError

UNDO_SECONDS = 8.0

SetTimer = Callable[[float, Callable[[], None]], Timer]


class Trash:
    """Deleted chats, purged from the store `seconds` after they were put here (or on `empty`)."""

    def __init__(self, store: Store, set_timer: SetTimer, seconds: float = UNDO_SECONDS) -> None:
        self.store = store
        self.set_timer = set_timer
        self.seconds = seconds
        self._timers: dict[int, Timer] = {}

    def __contains__(self, chat_id: object) -> bool:
        return chat_id in self._timers

    def put(self, chat_id: int) -> None:
        self._timers[chat_id] = self.set_timer(self.seconds, lambda: self._purge(chat_id))

    def restore(self) -> int | None:
        """Take back the chat deleted last, if it is still here."""
        if not self._timers:
            return None
        chat_id = next(reversed(self._timers))
        self._timers.pop(chat_id).stop()
        return chat_id

    def empty(self) -> None:
        for chat_id in list(self._timers):
            self._purge(chat_id)

    def _purge(self, chat_id: int) -> None:
        timer = self._timers.pop(chat_id, None)
        if timer is not None:
            timer.stop()
            # A store that cannot delete now (locked) keeps the chat: it shows again in the list.
            with suppress(StoreError):
                self.store.delete_chat(chat_id)
