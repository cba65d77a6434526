"""The open chat's messages, oldest first; the welcome view stands in while there are none."""

from __future__ import annotations

from textual.containers import VerticalScroll

from dg_chat.store import StoredMessage
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.welcome import Welcome


def stored_view(message: StoredMessage, version: tuple[int, int]) -> MessageView:
    return MessageView(message.role, message.content, thinking=message.thinking, status=message.status,
                       error=message.error, message_id=message.id, model=message.model, stats=message.stats,
                       version=version)


class Transcript(VerticalScroll):
    def views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def show(self, messages: list[StoredMessage], versions: dict[int, tuple[int, int]],
                   welcome: Welcome) -> None:
        """Show `messages` (each with its version number and count), or `welcome` if there are none."""
        await self.remove_children()
        await self.mount_all([stored_view(m, versions.get(m.id, (1, 1))) for m in messages] or [welcome])

    async def add(self, *views: MessageView) -> None:
        await self.query(Welcome).remove()
        await self.mount_all(views)

    async def remove_from(self, message_id: int) -> None:
        """Remove the view of message `message_id` and those after it."""
        await self.remove_children([v for v in self.views() if v.message_id is not None and v.message_id >= message_id])

    async def replace(self, view: MessageView, message: StoredMessage, version: tuple[int, int]) -> MessageView:
        """Show `message` (another version of the one `view` shows) in place of `view`."""
        shown = stored_view(message, version)
        await self.mount(shown, after=view)
        await view.remove()
        return shown
