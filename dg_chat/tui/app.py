"""The dg-chat Textual app: a chat whose answers are shown denoising live, with a saved history.

The app composes the screen, loads the engine (loading.py) and binds the keys (bindings.py); each
other concern has its module: the open chat and its turns (chat.py, turns.py), the chat list
(widgets/sidebar.py), failures (failures.py), exit signals (signals.py), screens/ and widgets/.
The engine is loaded on a thread and run in thread workers that never wait for the UI; the UI
reacts to their messages only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer

from dg_chat.config import Settings
from dg_chat.engine.turn_engine import TurnEngine
from dg_chat.export import default_export_dir, export_chat
from dg_chat.store import Store
from dg_chat.text.sanitize import printable, visible
from dg_chat.tui.bindings import APP_BINDINGS, binding_ids, key_rows
from dg_chat.tui.chat import ChatPane
from dg_chat.tui.commands import app_commands
from dg_chat.tui.failures import recoverable
from dg_chat.tui.loading import (
    EngineFactory,
    EngineFailed,
    EngineLoaded,
    default_engine_factory,
    load_in_background,
)
from dg_chat.tui.screens.dialogs import AskText
from dg_chat.tui.screens.first_run import FirstRunScreen, first_run_needed
from dg_chat.tui.screens.help import HelpScreen
from dg_chat.tui.screens.model_picker import ModelPicker, model_choices
from dg_chat.tui.screenshot import TITLE as SCREENSHOT, screenshot_command
from dg_chat.tui.signals import exit_on_signals, restore_signals
from dg_chat.tui.trash import Trash
from dg_chat.tui.widgets.canvas import CanvasView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.prompt_history import PromptHistory
from dg_chat.tui.widgets.sidebar import Sidebar
from dg_chat.tui.widgets.status import StatusBar
from dg_chat.tui.widgets.welcome import Welcome


class DgChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "dg-chat"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    BINDINGS = APP_BINDINGS  # each with an id: settings.ui.keymap maps ids to other keys (bindings.py)

    def __init__(self, settings: Settings | None = None, *, store: Store,
                 engine_factory: EngineFactory = default_engine_factory, continue_last: bool = False,
                 export_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.store = store
        self.engine_factory = engine_factory
        self.continue_last = continue_last
        self.export_dir = export_dir or default_export_dir()
        self.chat = ChatPane(store, self.settings, id="main")
        self._trash = Trash(store, self.set_timer)
        self.set_keymap(self.settings.ui.keymap)

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every notice passes here (a widget's or screen's `notify` calls the app's). Its text may
        quote a model file, a server or an answer, so controls are shown, never sent (sanitize.py)."""
        super().notify(printable(message), title=visible(title), severity=severity, timeout=timeout, markup=markup)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Paste):  # before any widget gets it: the clipboard may hold a page's escapes
            event.text = printable(event.text)
        await super().on_event(event)

    # layout and start-up

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Sidebar(self.store, self._trash, id="sidebar")
            yield self.chat
        yield StatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        if self.settings.ui.theme in self.available_themes:
            self.theme = self.settings.ui.theme
        else:
            self.notify(f"Unknown theme {self.settings.ui.theme!r}; using {self.theme}", severity="warning",
                        markup=False)
        unknown = sorted(set(self.settings.ui.keymap) - binding_ids())
        if unknown:
            self.notify(f"ui.keymap: unknown binding id(s) {', '.join(unknown)}; "
                        f"known ids: {', '.join(sorted(binding_ids()))}", severity="warning", timeout=20, markup=False)
        exit_on_signals(self)
        self.query_one(CanvasView).display = False
        self.chat.transcript.anchor()
        self.status.set(thinking=self.chat.chat_settings.sampler.thinking, state="loading the model…")
        chat_id = self.store.last_chat_id() if self.continue_last else None
        await self.show_chat(chat_id)
        self.query_one(Prompt).prompt_history = PromptHistory(self.store.recent_prompts())
        self.query_one(Prompt).focus()
        if first_run_needed(self.settings):
            self.push_screen(FirstRunScreen(self.settings), self._start_with)
        else:
            self.load_engine()

    def _start_with(self, spec: str | None) -> None:
        """The first-run screen's choice: the demo, or the model it just downloaded."""
        self.settings.model = spec or ""
        self.load_engine()

    @property
    def engine(self) -> TurnEngine | None:
        return self.chat.engine

    @property
    def engine_error(self) -> str:
        return self.chat.engine_error

    @property
    def chat_id(self) -> int | None:
        return self.chat.chat_id

    @property
    def chat_settings(self) -> Settings:
        return self.chat.chat_settings

    @property
    def generating(self) -> bool:
        """A turn is running (or being stopped)."""
        return self.chat.generating

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    # the engine

    def load_engine(self, settings: Settings | None = None) -> None:
        """The one place where the app obtains its engine (loading.py). Answers wait until it is
        loaded; quitting does not."""
        self.chat.loading = True
        load_in_background(self.engine_factory, settings or self.settings, self)

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        previous, engine = self.chat.engine, message.engine
        self.chat.engine, self.chat.engine_error, self.chat.loading = engine, "", False
        if previous is not None and previous is not engine:
            previous.close()  # a model chosen in the picker replaces it (no answer runs: see `loading`)
        for welcome in self.query(Welcome):
            welcome.show_model(engine.info)
        self.query_one(CanvasView).set_vocabulary(engine.tokenizer.piece,
                                                  engine.backend.mask_token_id, engine.end_ids)
        self.status.set(model=printable(engine.name), backend=engine.backend.name, device=engine.backend.device,
                        state="ready", tokens_per_second=None, steps_per_block=None, prompt_tokens=None)

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.chat.loading = False
        if self.chat.engine is None:  # a model that failed to replace the loaded one leaves that one in use
            self.chat.engine_error = message.error
            self.status.set(state="no model loaded")
            for welcome in self.query(Welcome):
                welcome.show_model(None, message.error)
        else:
            self.status.set(state="ready")
        self.notify(message.error, title="Could not load the model", severity="error", timeout=30, markup=False)

    def action_pick_model(self) -> None:
        if self.chat.busy():
            return
        if self.chat.loading:
            self.notify("A model is loading: pick another once it is ready", severity="warning")
            return
        current = self.engine.info.file if self.engine is not None else ""

        def load(spec: str | None) -> None:
            if spec is not None:
                self.status.set(state="loading the model…")
                self.load_engine(replace(self.settings, model=spec))

        self.push_screen(ModelPicker(model_choices(self.settings, current), current), load)

    # the open chat (chat.py)

    def action_stop(self) -> None:
        self.chat.stop()

    @recoverable
    async def action_regenerate(self) -> None:
        await self.chat.regenerate()

    def action_edit_last(self) -> None:
        self.chat.edit_last()

    @recoverable
    def action_toggle_thinking(self) -> None:
        self.chat.toggle_thinking()

    @recoverable
    def action_settings(self) -> None:
        self.chat.edit_settings()

    def action_replay_last(self) -> None:
        self.chat.replay_last()

    @recoverable
    async def action_new_chat(self) -> None:
        await self.show_chat(None)
        self.query_one(Prompt).focus()

    async def show_chat(self, chat_id: int | None) -> None:
        """Show a saved chat, or an empty new one (None). A turn in progress is stopped."""
        await self.chat.show_chat(chat_id)
        await self.query_one(Sidebar).list_chats(chat_id)

    @recoverable
    def action_export(self) -> None:
        if self.chat_id is None:
            self.notify("Nothing to export yet", severity="warning")
            return
        self.push_screen(AskText("Export this chat (Markdown and JSON) to the folder:", str(self.export_dir)),
                         functools.partial(self._export_to, self.chat_id))

    @recoverable
    def _export_to(self, chat_id: int, folder: str | None) -> None:
        if folder is None:
            return
        self.export_dir = Path(folder).expanduser()
        try:
            base = export_chat(self.store, chat_id, self.export_dir, self.engine.name if self.engine else "")
        except OSError as exc:
            self.notify(f"Export failed: {exc}", severity="error", markup=False)
        else:
            self.notify(f"Exported to {base}.md and {base}.json", markup=False)

    # chat list (widgets/sidebar.py)

    @on(ChatPane.Stored)
    @recoverable
    async def _chat_stored(self, message: ChatPane.Stored) -> None:
        sidebar = self.query_one(Sidebar)
        if sidebar.top != message.chat_id:  # a new chat, or an older one that moves to the top
            await sidebar.list_chats(message.chat_id)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

    def action_search(self) -> None:
        self.query_one(Sidebar).display = True
        self.query_one("#chat-search").focus()

    @on(Sidebar.Open)
    @recoverable
    async def _open_chat(self, message: Sidebar.Open) -> None:
        if message.chat.id != self.chat_id:
            await self.show_chat(message.chat.id)
        self.query_one(Prompt).focus()

    @on(Sidebar.OpenChatDeleted)
    @recoverable
    async def _open_chat_deleted(self) -> None:
        await self.show_chat(None)

    # help, palette, shutdown

    def action_help(self) -> None:
        self.push_screen(HelpScreen(key_rows(self.settings.ui.keymap)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            yield screenshot_command(self) if command.title == SCREENSHOT else command
        if not isinstance(screen, FirstRunScreen):  # the chat behind it has no model yet (as its keys)
            yield from app_commands(self)

    def on_unmount(self) -> None:
        restore_signals()
        self._trash.empty()
        # The worker stores the answer as stopped at the next step; give it that long.
        engine_free = self.chat.turns.leave(timeout=10)
        if self.engine is not None and engine_free:
            self.engine.close()
