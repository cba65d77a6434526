"""The chat list: search box and saved chats, most recent first (Enter opens, r renames, d deletes,
u undoes the last delete for a few seconds)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from dg_chat.store import ChatSummary
from dg_chat.text.sanitize import printable


class ChatItem(ListItem):
    def __init__(self, chat: ChatSummary) -> None:
        super().__init__(Label(printable(chat.title), markup=False))
        self.chat = chat


class ChatListView(ListView):
    BINDINGS = [
        Binding("r", "rename", "Rename", id="rename-chat", tooltip="Rename the highlighted chat"),
        Binding("d,delete", "delete", "Delete", id="delete-chat", tooltip="Delete the highlighted chat"),
        Binding("u", "undo_delete", "Undo delete", id="undo-delete-chat", tooltip="Bring back the chat deleted last"),
    ]

    class UndoDelete(Message):
        """Bring back the chat deleted last (while it is still in the trash)."""

    class Action(Message):
        def __init__(self, action: str, chat: ChatSummary) -> None:
            super().__init__()
            self.action = action
            self.chat = chat

    def _highlighted(self) -> ChatSummary | None:
        item = self.highlighted_child
        return item.chat if isinstance(item, ChatItem) else None

    def action_rename(self) -> None:
        if chat := self._highlighted():
            self.post_message(self.Action("rename", chat))

    def action_delete(self) -> None:
        if chat := self._highlighted():
            self.post_message(self.Action("delete", chat))

    def action_undo_delete(self) -> None:
        self.post_message(self.UndoDelete())


class Sidebar(Vertical):
    class Open(Message):
        def __init__(self, chat: ChatSummary) -> None:
            super().__init__()
            self.chat = chat

    class Search(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search chats", id="chat-search")
        yield ChatListView(id="chat-list")

    async def show(self, chats: list[ChatSummary], highlight: int | None) -> None:
        """List `chats`, the cursor on the chat with id `highlight` (if listed)."""
        chat_list = self.query_one(ChatListView)
        await chat_list.clear()
        await chat_list.extend(ChatItem(chat) for chat in chats)
        ids = [chat.id for chat in chats]
        chat_list.index = ids.index(highlight) if highlight in ids else None

    @on(Input.Changed, "#chat-search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Search(event.value))

    @on(Input.Submitted, "#chat-search")
    def _to_list(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one(ChatListView).focus()

    @on(ListView.Selected, "#chat-list")
    def _open(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ChatItem):
            self.post_message(self.Open(event.item.chat))
