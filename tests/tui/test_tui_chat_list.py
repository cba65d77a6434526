"""The chat list keeps its cursor on the chat just renamed; a delete can be undone for a few seconds."""

from __future__ import annotations

from dg_chat.store import StoreError
from dg_chat.tui.widgets.sidebar import ChatListView
from tests.tui.conftest import SIZE, send, wait_until
from tests.tui.fake_engine import ScriptedEngine


async def two_chats(pilot) -> ChatListView:
    await send(pilot, "apples")
    await pilot.press("ctrl+n")
    await send(pilot, "pears")
    chat_list = pilot.app.query_one(ChatListView)
    chat_list.focus()
    return chat_list


def highlighted_title(chat_list: ChatListView) -> str:
    return chat_list.highlighted_child.chat.title


async def test_the_cursor_stays_on_the_renamed_chat(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        chat_list = await two_chats(pilot)
        chat_list.index = 1  # "apples", not the open chat
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one("#dialog-input").value = "Fruit talk"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any(c.title == "Fruit talk" for c in store.chats()))
        await wait_until(pilot, lambda: highlighted_title(chat_list) == "Fruit talk")


async def test_a_rename_the_history_refuses_is_a_notice(make_app, store, monkeypatch):
    def locked(*args):
        raise StoreError("the chat history is locked by another program")

    monkeypatch.setattr(store, "rename_chat", locked)
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        chat_list = await two_chats(pilot)
        await pilot.press("r")
        await pilot.pause()
        app.screen.query_one("#dialog-input").value = "Fruit talk"
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("locked by another program" in n.message for n in app._notifications))
        assert app.is_running and highlighted_title(chat_list) == "pears"


async def delete_the_second_of_two_chats(pilot):
    """Two chats, the second deleted with d, y: the chat list, now showing one."""
    chat_list = await two_chats(pilot)
    chat_list.index = 1
    await pilot.press("d")
    await pilot.pause()
    await pilot.press("y")
    await wait_until(pilot, lambda: len(chat_list.children) == 1)
    return chat_list


async def test_a_deleted_chat_can_be_brought_back_with_u(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        chat_list = await delete_the_second_of_two_chats(pilot)
        assert any("press u" in n.message for n in app._notifications)
        await pilot.press("u")
        await wait_until(pilot, lambda: len(chat_list.children) == 2)
        assert [c.title for c in store.chats()] == ["pears", "apples"]
    assert len(store.chats()) == 2  # nothing left in the trash to purge on exit


async def test_a_delete_not_undone_is_carried_out(make_app, store):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        await delete_the_second_of_two_chats(pilot)
        assert len(store.chats()) == 2  # still undoable
    assert [c.title for c in store.chats()] == ["pears"]  # purged when the app ends


async def test_a_chat_the_history_cannot_read_is_not_opened_and_the_next_message_stays_in_the_chat_shown(
        make_app, store, monkeypatch):
    app = make_app(ScriptedEngine())
    async with app.run_test(size=SIZE) as pilot:
        chat_list = await two_chats(pilot)
        shown = app.chat_id
        chat_list.index = 1  # "apples", not the open chat

        def locked(*args, **kwargs):
            raise StoreError("history database error: database is locked")

        with monkeypatch.context() as patched:
            patched.setattr(store, "messages", locked)
            await pilot.press("enter")
            await wait_until(pilot, lambda: any("locked" in n.message for n in app._notifications))
        assert app.chat_id == shown
        await send(pilot, "more about pears")
    by_title = {chat.title: [m.content for m in store.messages(chat.id)] for chat in store.chats()}
    assert by_title == {"apples": ["apples", "You said: apples"],
                        "pears": ["pears", "You said: pears", "more about pears", "You said: more about pears"]}
