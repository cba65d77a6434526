"""The app's key bindings, each with an id: `settings.ui.keymap` maps ids to other keys (App.set_keymap).

Screens and widgets keep their own bindings beside the actions they run; `binding_groups` gathers
every binding with an id, for the key help screen, the README's key table and the keymap check.
Keys free in TextArea were chosen for the app, since the prompt has the focus most of the time.
"""

from __future__ import annotations

from collections.abc import Mapping

from textual.binding import Binding, BindingType

from dg_chat.tui.screens.dialogs import AskText, Confirm
from dg_chat.tui.screens.help import HelpScreen, KeyRow, key_label
from dg_chat.tui.screens.model_picker import ModelPicker
from dg_chat.tui.screens.replay import ReplayScreen
from dg_chat.tui.screens.settings import SettingsScreen
from dg_chat.tui.widgets.message import MessageView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.sidebar import ChatListView

APP_BINDINGS: list[BindingType] = [
    Binding("escape", "stop", "Stop", id="stop", tooltip="Stop the answer at the next step"),
    Binding("ctrl+r", "regenerate", "Regenerate", id="regenerate", tooltip="Answer the last message again"),
    Binding("ctrl+g", "edit_last", "Edit", id="edit-last", tooltip="Edit and resend your last message"),
    Binding("ctrl+n", "new_chat", "New", id="new-chat", tooltip="Start a new chat"),
    Binding("ctrl+t", "toggle_thinking", "Think", id="toggle-thinking", tooltip="Thinking mode on/off"),
    Binding("ctrl+o", "settings", "Settings", id="settings", tooltip="Sampler settings of this chat"),
    Binding("ctrl+l", "replay_last", "Replay", id="replay-last", tooltip="Replay the last answer"),
    Binding("ctrl+b", "toggle_sidebar", "Chats", id="toggle-sidebar", show=False,
            tooltip="Show/hide the chat list"),
    Binding("ctrl+f", "search", "Search", id="search-chats", show=False, tooltip="Search the chats"),
    Binding("ctrl+s", "export", "Export", id="export", show=False,
            tooltip="Export this chat to Markdown and JSON"),
    Binding("f2", "pick_model", "Model", id="pick-model", tooltip="Choose and load another model"),
    Binding("f1,question_mark", "help", "Keys", id="help", tooltip="Every key binding by id"),
]
"""The bindings of the app itself (DgChatApp.BINDINGS)."""


def binding_groups() -> list[tuple[str, list[Binding]]]:
    """The bindings with an id, by where they act."""
    owners = (("App", APP_BINDINGS), ("Prompt", Prompt.BINDINGS), ("Message", MessageView.BINDINGS),
              ("Chat list", ChatListView.BINDINGS), ("Model picker", ModelPicker.BINDINGS),
              ("Settings", SettingsScreen.BINDINGS), ("Replay", ReplayScreen.BINDINGS),
              ("Dialogs", AskText.BINDINGS), ("Dialogs", Confirm.BINDINGS), ("Key help", HelpScreen.BINDINGS))
    groups: dict[str, list[Binding]] = {}
    for title, bindings in owners:
        groups.setdefault(title, []).extend(binding for binding in bindings
                                            if isinstance(binding, Binding) and binding.id)
    return list(groups.items())


def key_bindings() -> list[Binding]:
    """Every binding that has an id, so that `ui.keymap` can remap it (for a key help listing)."""
    return [binding for _, bindings in binding_groups() for binding in bindings]


def binding_ids() -> set[str]:
    return {binding.id for binding in key_bindings() if binding.id}


def key_rows(keymap: Mapping[str, str]) -> list[tuple[str, list[KeyRow]]]:
    """The help screen's rows: each binding with the keys it has now (`keymap` applied)."""
    return [(title, [KeyRow(key_label(keymap.get(b.id or "", b.key)), b.id or "", b.tooltip or b.description)
                     for b in bindings]) for title, bindings in binding_groups()]
