"""How the app reports what went wrong: one line for the user (`describe`), and UI handlers whose
errors of ours become a notice instead of ending the app (`recoverable`)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from dg_chat.errors import DgChatError
from dg_chat.tui.text import one_line


def describe(error: BaseException) -> str:
    """One line for the user: our own errors as they are, anything else with its type."""
    if isinstance(error, DgChatError) or not str(error).strip():
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


class Notifies(Protocol):
    def notify(self, message: str, *, title: str = ..., severity: Any = ..., timeout: float | None = ...,
               markup: bool = ...) -> None: ...


def recoverable(handler: Callable[..., Awaitable[None] | None]) -> Callable[..., Awaitable[None]]:
    """Show a DgChatError raised by a UI handler (a locked or full history database, say) as a
    notice instead of ending the app; anything else is a bug and still ends it."""

    @functools.wraps(handler)
    async def run(self: Notifies, *args: object) -> None:
        try:
            result = handler(self, *args)
            if inspect.isawaitable(result):
                await result
        except DgChatError as exc:
            self.notify(one_line(exc), title="dg-chat", severity="error", timeout=30, markup=False)

    return run
