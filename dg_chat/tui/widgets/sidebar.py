"""The chat list: search box and saved chats, most recent first (Enter opens, r renames, d deletes,
u undoes the last delete for a few seconds). The sidebar lists, renames and deletes chats in the
store itself; the app opens the chats it asks for."""

from __future__ import annotations

from functools import partial

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from dg_chat.store import ChatSummary, Store
from dg_chat.text.sanitize import printable
from dg_chat.tui.failures import recoverable
from dg_chat.tui.screens.dialogs import AskText, Confirm
from dg_chat.tui.trash import Trash


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

    class OpenChatDeleted(Message):
        """The chat on screen was deleted (into the trash): the app shows a new one."""

    def __init__(self, store: Store, trash: Trash, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store = store
        self.trash = trash
        self.open_chat: int | None = None
        """The chat on screen, as of the last listing."""
        self.top: int | None = None
        """The chat listed first (the most recent one)."""
        self._search = ""

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search chats", id="chat-search")
        yield ChatListView(id="chat-list")

    async def list_chats(self, open_chat: int | None, highlight: int | None = None) -> None:
        """List the chats (not those in the trash), the cursor on `highlight` or the open chat."""
        self.open_chat = open_chat
        chats = [chat for chat in self.store.chats(self._search) if chat.id not in self.trash]
        self.top = chats[0].id if chats else None
        chat_list = self.query_one(ChatListView)
        await chat_list.clear()
        await chat_list.extend(ChatItem(chat) for chat in chats)
        ids = [chat.id for chat in chats]
        highlight = open_chat if highlight is None else highlight
        chat_list.index = ids.index(highlight) if highlight in ids else None

    @on(Input.Changed, "#chat-search")
    @recoverable
    async def _search_chats(self, event: Input.Changed) -> None:
        event.stop()
        self._search = event.value
        await self.list_chats(self.open_chat)

    @on(Input.Submitted, "#chat-search")
    def _to_list(self, event: Input.Submitted) -> None:
        event.stop()
        chat_list = self.query_one(ChatListView)
        if chat_list.index is None and chat_list.children:  # the open chat is not among the results
            chat_list.index = 0
        chat_list.focus()

    @on(ListView.Selected, "#chat-list")
    def _open(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ChatItem):
            self.post_message(self.Open(event.item.chat))

    @on(ChatListView.Action)
    def _chat_action(self, message: ChatListView.Action) -> None:
        message.stop()
        chat = message.chat
        if message.action == "rename":
            self.app.push_screen(AskText("New name of the chat:", chat.title), partial(self._rename, chat))
        else:
            self.app.push_screen(Confirm(f"Delete the chat {chat.title!r} and its history?"),
                                 partial(self._delete, chat))

    @recoverable
    async def _rename(self, chat: ChatSummary, title: str | None) -> None:
        if title:
            self.store.rename_chat(chat.id, title)
            await self.list_chats(self.open_chat, highlight=chat.id)

    @recoverable
    async def _delete(self, chat: ChatSummary, confirmed: bool | None) -> None:
        if confirmed:
            self.trash.put(chat.id)
            if chat.id == self.open_chat:
                self.post_message(self.OpenChatDeleted())
            else:
                await self.list_chats(self.open_chat)
            self.notify(f"Deleted {printable(chat.title)!r}: press u in the chat list within "
                        f"{self.trash.seconds:.0f} s to undo", markup=False)

    @on(ChatListView.UndoDelete)
    @recoverable
    async def _undo_delete(self, message: ChatListView.UndoDelete) -> None:
        message.stop()
        chat_id = self.trash.restore()
        if chat_id is None:
            self.notify("No deleted chat to bring back", severity="warning")
        else:
            await self.list_chats(self.open_chat, highlight=chat_id)
