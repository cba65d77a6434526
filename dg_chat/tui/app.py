"""The dg-chat Textual app: a chat whose answers are shown denoising live, with a saved history.

Threads: the engine is loaded and run in thread workers. A turn's worker records every event
in the store itself (see recording.py), posts canvas frames to the canvas widget as
coalescable messages and every other event to the app as a `TurnEvent`; it never waits for
the UI. The UI reacts to those messages only.

SIGTERM and SIGHUP end the app like Ctrl+Q (a running answer is stored as stopped, the terminal
is restored), with the exit status of a process killed by that signal (143, 129).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import signal
import threading
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, TextArea

from dg_chat.config import Settings
from dg_chat.config_file import save_defaults
from dg_chat.engine.events import BlockCommitted, CanvasStep, Event, PromptEncoded, TurnFailed, TurnFinished
from dg_chat.errors import DgChatError
from dg_chat.store import Store, StoreError, StoredMessage, title_from
from dg_chat.text.chat import Message as ChatMessage
from dg_chat.text.sanitize import printable
from dg_chat.tui.context import context_problem
from dg_chat.tui.export import default_export_dir, export_chat
from dg_chat.tui.first_run import FirstRunScreen, first_run_needed
from dg_chat.tui.commands import app_commands
from dg_chat.tui.recording import AnswerRecorder, Frame, decode_block
from dg_chat.tui.screens.dialogs import AskText, Confirm
from dg_chat.tui.screens.help import HelpScreen, KeyRow, key_label
from dg_chat.tui.screens.model_picker import ModelPicker, model_choices
from dg_chat.tui.screens.replay import ReplayScreen
from dg_chat.tui.screens.settings import SettingsChoice, SettingsScreen, sampler_defaults
from dg_chat.tui.screenshot import TITLE as SCREENSHOT
from dg_chat.tui.screenshot import screenshot_command
from dg_chat.tui.text import one_line
from dg_chat.tui.trash import Trash
from dg_chat.tui.widgets.canvas import CanvasFrame, CanvasView
from dg_chat.tui.widgets.gauge import DELAY as GAUGE_DELAY
from dg_chat.tui.widgets.gauge import ContextGauge, measure
from dg_chat.tui.widgets.message import GENERATING, MessageView
from dg_chat.tui.widgets.prompt import Prompt
from dg_chat.tui.widgets.prompt_history import PromptHistory
from dg_chat.tui.widgets.sidebar import ChatListView, Sidebar
from dg_chat.tui.widgets.status import StatusBar
from dg_chat.tui.widgets.welcome import Welcome

if TYPE_CHECKING:
    from dg_chat.engine.engine import Engine

EngineFactory = Callable[[Settings], "Engine"]
EXIT_STATUS = {signum: 128 + signum for signum in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
               if signum is not None}
"""Signals that end the app as Ctrl+Q does, and the exit status of each (143, 129; Windows has no SIGHUP)."""


def default_engine_factory(settings: Settings) -> Engine:
    # Imported when called: loading torch and the engine is slow, and tests inject their own.
    from dg_chat.engine.loader import load_engine  # noqa: PLC0415

    return load_engine(settings)


def describe(error: BaseException) -> str:
    """One line for the user: our own errors as they are, anything else with its type."""
    if isinstance(error, DgChatError) or not str(error).strip():
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


def recoverable(handler: Callable[..., Awaitable[None] | None]) -> Callable[..., Awaitable[None]]:
    """Show a DgChatError raised by a UI handler (a locked or full history database, say) as a
    notice instead of ending the app; anything else is a bug and still ends it."""

    @functools.wraps(handler)
    async def run(self: DgChatApp, *args: object) -> None:
        try:
            result = handler(self, *args)
            if inspect.isawaitable(result):
                await result
        except DgChatError as exc:
            self.notify(one_line(exc), title="dg-chat", severity="error", timeout=30, markup=False)

    return run


class EngineLoaded(Message):
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine


class EngineFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class TurnEvent(Message):
    """An event of turn `turn` other than a canvas step (those go to the canvas)."""

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


class DgChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "dg-chat"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    # Every binding has an id: settings.ui.keymap maps ids to other keys (App.set_keymap).
    # Keys free in TextArea were chosen, since the prompt has the focus most of the time.
    BINDINGS = [
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

    def __init__(self, settings: Settings | None = None, *, store: Store,
                 engine_factory: EngineFactory = default_engine_factory, continue_last: bool = False,
                 export_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.store = store
        self.engine_factory = engine_factory
        self.continue_last = continue_last
        self.export_dir = export_dir or default_export_dir()
        self.engine: Engine | None = None
        self.engine_error = ""
        self.chat_id: int | None = None
        self.chat_settings = copy.deepcopy(self.settings)
        self._turn: Turn | None = None
        self._turns = 0
        self._editing: int | None = None
        """Id of the user message being edited; resending replaces it and what follows."""
        self._search = ""
        self._sidebar_top: int | None = None
        self._trash = Trash(store, self.set_timer)
        self.set_keymap(self.settings.ui.keymap)

    # layout and start-up

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Sidebar(id="sidebar")
            with Vertical(id="main"):
                yield VerticalScroll(id="transcript")
                yield CanvasView(fps=self.settings.ui.canvas_fps, id="canvas")
                yield Prompt(id="prompt")
                yield ContextGauge(id="gauge")
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
        self._handle_exit_signals()
        self.query_one(CanvasView).display = False
        self.transcript.anchor()
        self.status.set(thinking=self.chat_settings.sampler.thinking, state="loading the model…")
        chat_id = self.store.last_chat_id() if self.continue_last else None
        await self.show_chat(chat_id)
        self.query_one(Prompt).prompt_history = PromptHistory(self.store.recent_prompts())
        self.query_one(Prompt).focus()
        if first_run_needed(self.settings):
            self.push_screen(FirstRunScreen(self.settings), self._start_with)
        else:
            self.load_engine()

    def _handle_exit_signals(self) -> None:
        loop = asyncio.get_running_loop()
        # Only an event loop of the main thread on a POSIX system can; elsewhere the defaults stay.
        with suppress(NotImplementedError, RuntimeError):
            for signum, status in EXIT_STATUS.items():
                loop.add_signal_handler(signum, self.exit, None, status)

    def _start_with(self, spec: str | None) -> None:
        """The first-run screen's choice: the demo, or the model it just downloaded."""
        self.settings.model = spec or ""
        self.load_engine()

    @property
    def generating(self) -> bool:
        """A turn is running (or being stopped)."""
        return self._turn is not None

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    # the engine

    @work(thread=True, exclusive=True, group="engine-load", exit_on_error=False)
    def load_engine(self, settings: Settings | None = None) -> None:
        """The one place where the app obtains its engine (slow: weights are loaded here)."""
        try:
            engine = self.engine_factory(settings or self.settings)
        except Exception as exc:  # noqa: BLE001 - missing model, corrupt file, OOM: the app stays usable
            self.post_message(EngineFailed(describe(exc)))
        else:
            self.post_message(EngineLoaded(engine))

    def on_engine_loaded(self, message: EngineLoaded) -> None:
        previous, engine = self.engine, message.engine
        self.engine, self.engine_error = engine, ""
        if previous is not None and previous is not engine and self._turn is None:
            previous.close()  # a model chosen in the picker replaces it
        for welcome in self.query(Welcome):
            welcome.show_model(engine.info)
        self.query_one(CanvasView).set_vocabulary(engine.tokenizer.piece,
                                                  getattr(engine.backend, "mask_token_id", None), engine.end_ids)
        self.status.set(model=printable(engine.name), backend=engine.backend.name, device=engine.backend.device,
                        state="ready")

    def on_engine_failed(self, message: EngineFailed) -> None:
        if self.engine is None:  # a model that failed to replace the loaded one leaves that one in use
            self.engine_error = message.error
            self.status.set(state="no model loaded")
            for welcome in self.query(Welcome):
                welcome.show_model(None, message.error)
        else:
            self.status.set(state="ready")
        self.notify(message.error, title="Could not load the model", severity="error", timeout=30, markup=False)

    @work(thread=True, group="turn", exit_on_error=False)
    def _generate(self, turn: Turn, engine: Engine, messages: list[ChatMessage], settings: Settings,
                  canvas: CanvasView) -> None:
        """Run one turn: store each event, then hand it to the UI without waiting for it."""
        recorder = AnswerRecorder(self.store, turn.message_id)
        try:
            for event in engine.turn(messages, settings.sampler, turn.cancel):
                recorder.record(event)
                if isinstance(event, CanvasStep):
                    canvas.post_message(CanvasFrame(turn.id, Frame.from_step(event)))
                elif not isinstance(event, (TurnFinished, TurnFailed)):
                    self.post_message(TurnEvent(turn.id, event))
            if recorder.result is None:
                raise DgChatError("the engine ended the turn without a result")
            result = recorder.result
        except Exception as exc:  # noqa: BLE001 - an engine crash must not lose the answer or the app
            result = TurnFailed(describe(exc))
            with suppress(StoreError):
                recorder.record(result)
        # The result goes out once the engine is left, so the UI may start the next turn at once.
        turn.done.set()
        self.post_message(TurnEvent(turn.id, result))

    async def on_turn_event(self, message: TurnEvent) -> None:
        turn, event = self._turn, message.event
        if turn is None or message.turn != turn.id:
            return
        final = isinstance(event, (TurnFinished, TurnFailed))
        try:
            if not turn.detached:
                await self._show_turn_event(turn, event)
            elif final:
                self.status.end_turn("ready")
                self.notify("The answer of the chat you left was stopped; what it had so far is kept.")
        finally:
            if final:
                self._turn = None

    @on(CanvasView.Painted, "#canvas")
    def _show_progress(self, message: CanvasView.Painted) -> None:
        if self._turn is not None and not self._turn.detached:
            frame = message.frame
            self.status.set(block=frame.block + 1, step=frame.step, max_steps=frame.max_steps)

    async def _show_turn_event(self, turn: Turn, event: Event) -> None:
        canvas = self.query_one(CanvasView)
        if isinstance(event, PromptEncoded):
            self.status.set(prompt_tokens=event.n_tokens, state="denoising")
        elif isinstance(event, BlockCommitted):
            canvas.flush()
            canvas.finish_block(event.block)
            await turn.view.show_committed(event.thinking, event.answer)
        elif isinstance(event, TurnFinished):
            canvas.stop()
            canvas.display = False
            stats = event.stats
            await turn.view.finish(event.thinking, event.answer, "stopped" if event.stopped else "complete",
                                   stats=stats.to_dict())
            self.status.end_turn("stopped" if event.stopped else "ready", tokens_per_second=stats.tokens_per_second,
                                 steps_per_block=stats.steps_per_block, prompt_tokens=stats.prompt_tokens)
        elif isinstance(event, TurnFailed):
            canvas.stop()
            canvas.display = False
            await turn.view.finish(turn.view.thinking, turn.view.content, "failed", event.error)
            self.status.end_turn("ready")
            self.notify(event.error, title="The answer failed", severity="error", timeout=30, markup=False)

    # conversation

    def _busy(self) -> bool:
        if self._turn is not None:
            self.notify("An answer is being generated: wait for it, or press Esc to stop it.", severity="warning")
            return True
        return False

    def _can_answer(self) -> bool:
        if self._busy():
            return False
        if self.engine is None:
            reason = self.engine_error or "the model is still loading"
            self.notify(f"No model to answer with: {reason}", severity="warning", markup=False)
            return False
        return True

    @on(TextArea.Changed, "#prompt")
    @work(exclusive=True, group="gauge", exit_on_error=False)
    async def _measure_draft(self) -> None:
        await asyncio.sleep(GAUGE_DELAY)  # exclusive: a later key cancels this measurement
        draft = self.query_one(Prompt).text
        size = None
        if self.engine is not None and draft.strip():
            history = self._history(before=self._editing)  # an edit replaces its message and what follows
            size = measure(self.engine, history, draft, self.chat_settings.sampler.thinking)
        self.query_one(ContextGauge).show(size)

    @on(Prompt.Submitted)
    @recoverable
    async def _send(self, message: Prompt.Submitted) -> None:
        if not self._can_answer():
            self.query_one(Prompt).restore(message.text)
            return
        assert self.engine is not None
        asked = [*self._history(before=self._editing), ChatMessage("user", message.text)]
        if problem := context_problem(self.engine, asked, self.chat_settings.sampler):
            self.query_one(Prompt).restore(message.text)
            self.notify(f"Not sent: {problem}", severity="error", timeout=20, markup=False)
            return
        if self._editing is not None:
            await self._delete_from(self._editing)
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=False)
        try:
            if self.chat_id is None:
                self.chat_id = self.store.create_chat(title_from(message.text), self.chat_settings)
            # Stored before anything is generated: the question survives whatever happens next.
            message_id = self.store.add_message(self.chat_id, "user", message.text)
        except DgChatError:
            self.query_one(Prompt).restore(message.text)
            raise
        await self._start_turn(MessageView("user", message.text, message_id=message_id))
        if self._sidebar_top != self.chat_id:  # a new chat, or an older one that moves to the top
            await self._refresh_sidebar()

    async def _start_turn(self, *new_views: MessageView) -> None:
        """Start the engine on the conversation, then show `new_views` and the coming answer."""
        assert self.engine is not None and self.chat_id is not None
        history = self._history()
        model = self.engine.info
        message_id = self.store.add_message(self.chat_id, "model", "", status="partial", model=model)
        versions = len(self.store.versions(message_id))  # earlier ones: regenerated
        self._turns += 1
        self.status.new_turn(blocks=self.chat_settings.sampler.max_canvases)
        turn = self._turn = Turn(self._turns, message_id, MessageView("model", status=GENERATING, message_id=message_id,
                                                                      model=model, version=(versions, versions)))
        canvas = self.query_one(CanvasView)
        canvas.start(turn.id)  # before the first frame can arrive
        self._generate(turn, self.engine, history, copy.deepcopy(self.chat_settings), canvas)
        await self.transcript.query(Welcome).remove()
        await self.transcript.mount_all([*new_views, turn.view])
        canvas.display = self.settings.ui.show_canvas
        self.transcript.scroll_end(animate=False)

    def _history(self, before: int | None = None) -> list[ChatMessage]:
        """The conversation as the model sees it: answers without text are left out unless the
        model ended them so itself (complete). `before`: only the messages stored before that id."""
        system = self.chat_settings.system_prompt
        messages = [ChatMessage("system", system)] if system else []
        for stored in self.store.messages(self.chat_id) if self.chat_id is not None else []:
            if before is not None and stored.id >= before:
                break
            if stored.role == "user" or stored.content or stored.status == "complete":
                messages.append(ChatMessage(stored.role, stored.content, stored.thinking))  # type: ignore[arg-type]
        return messages

    def _views(self) -> list[MessageView]:
        return list(self.transcript.query(MessageView))

    async def _delete_from(self, message_id: int) -> None:
        self.store.delete_messages_from(message_id)
        await self.transcript.remove_children([v for v in self._views()
                                               if v.message_id is not None and v.message_id >= message_id])

    def action_stop(self) -> None:
        if self._turn is not None:
            self._turn.cancel.set()
            self.status.set(state="stopping…")
        elif self._editing is not None:
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=True)
            self.notify("Edit cancelled")

    @recoverable
    async def action_regenerate(self) -> None:
        if not self._can_answer():
            return
        views = self._views()
        if not views or self.chat_id is None:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        if views[-1].role == "model" and views[-1].message_id is not None:
            self.store.supersede(views[-1].message_id)  # kept as an earlier version (◀ ▶ on the answer)
            await views[-1].remove()
        await self._start_turn()

    @on(MessageView.VersionRequested)
    @recoverable
    async def _show_version(self, message: MessageView.VersionRequested) -> None:
        view = message.view
        if self._busy() or view.message_id is None:
            return
        versions = self.store.versions(view.message_id)
        number = view.version[0] - 1 + message.direction
        if not 0 <= number < len(versions):
            return
        self.store.choose_version(versions[number].id)
        shown = stored_view(versions[number], (number + 1, len(versions)))
        await self.transcript.mount(shown, after=view)
        await view.remove()
        shown.focus()

    def action_edit_last(self) -> None:
        if self._busy():
            return
        users = [v for v in self._views() if v.role == "user"]
        if not users:
            self.notify("No message to edit yet", severity="warning")
            return
        prompt = self.query_one(Prompt)
        if self._editing is None:
            prompt.begin_edit(users[-1].content)
        prompt.focus()
        self._editing = users[-1].message_id
        self.notify("Editing your last message: Enter resends it and replaces the answer, Esc cancels.")

    @recoverable
    async def action_new_chat(self) -> None:
        await self.show_chat(None)
        self.query_one(Prompt).focus()

    async def show_chat(self, chat_id: int | None) -> None:
        """Show a saved chat, or an empty new one (None). A turn in progress is stopped."""
        if self._turn is not None:
            self._turn.cancel.set()
            self._turn.detached = True
            canvas = self.query_one(CanvasView)
            canvas.stop()
            canvas.display = False
            self.status.end_turn("stopping…")
        if self._editing is not None:
            self._editing = None
            self.query_one(Prompt).end_edit(cancelled=True)
        self.chat_id = chat_id
        self.chat_settings = self.store.chat_settings(chat_id) if chat_id is not None else copy.deepcopy(self.settings)
        with self.batch_update():
            await self.transcript.remove_children()
            messages = self.store.messages(chat_id) if chat_id is not None else []
            versions = self.store.version_numbers(chat_id) if chat_id is not None else {}
            await self.transcript.mount_all(
                [stored_view(m, versions.get(m.id, (1, 1))) for m in messages]
                or [Welcome(self.engine and self.engine.info, self.engine_error)])
        self.transcript.scroll_end(animate=False)
        self.status.set(thinking=self.chat_settings.sampler.thinking)
        await self._refresh_sidebar()

    def action_pick_model(self) -> None:
        if self._busy():
            return
        current = self.engine.info.file if self.engine is not None else ""

        def load(spec: str | None) -> None:
            if spec is not None:
                self.status.set(state="loading the model…")
                self.load_engine(replace(self.settings, model=spec))

        self.push_screen(ModelPicker(model_choices(self.settings, current), current), load)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(key_rows(self)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            yield screenshot_command(self) if command.title == SCREENSHOT else command
        yield from app_commands(self)

    def _save_chat_settings(self) -> None:
        if self.chat_id is not None:
            self.store.set_chat_settings(self.chat_id, self.chat_settings)
        self.status.set(thinking=self.chat_settings.sampler.thinking)

    @recoverable
    def action_toggle_thinking(self) -> None:
        sampler = self.chat_settings.sampler
        sampler.thinking = not sampler.thinking
        self._save_chat_settings()
        self.notify(f"Thinking {'on' if sampler.thinking else 'off'} for this chat")

    @recoverable
    def action_settings(self) -> None:
        noise = getattr(self.engine.backend, "noise", None) if self.engine is not None else None
        self.push_screen(SettingsScreen(self.chat_settings, noise), self._apply_settings)

    @recoverable
    def _apply_settings(self, choice: SettingsChoice | None) -> None:
        if choice is None:
            return
        self.chat_settings = choice.settings
        self._save_chat_settings()
        if choice.as_default:
            path = save_defaults(sampler_defaults(choice.settings))
            self.settings.sampler = copy.deepcopy(choice.settings.sampler)
            self.settings.system_prompt = choice.settings.system_prompt
            self.notify(f"Settings saved for this chat and as the default of new chats ({path})", markup=False)
        else:
            self.notify("Settings saved for this chat")

    # replay, copy, export

    @on(MessageView.ReplayRequested)
    @recoverable
    def _replay(self, message: MessageView.ReplayRequested) -> None:
        view = message.view
        if view.role != "model" or view.message_id is None:
            self.notify("Only answers can be replayed", severity="warning")
            return
        if self.engine is None:
            self.notify("Replay shows tokens with the model's tokenizer: load a model first", severity="warning")
            return
        blocks = [decode_block(data) for data in self.store.frames(view.message_id)]
        if not any(blocks):
            self.notify("No denoising steps were recorded for this answer", severity="warning")
            return
        self.push_screen(ReplayScreen(blocks, self.engine.tokenizer.piece,
                                      getattr(self.engine.backend, "mask_token_id", None), self.engine.end_ids))

    def action_replay_last(self) -> None:
        answers = [v for v in self._views() if v.role == "model"]
        if not answers:
            self.notify("No answer to replay yet", severity="warning")
            return
        answers[-1].action_replay()

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

    # chat list

    async def _refresh_sidebar(self, highlight: int | None = None) -> None:
        """List the chats (not those in the trash), the cursor on `highlight` or the open chat."""
        chats = [chat for chat in self.store.chats(self._search) if chat.id not in self._trash]
        self._sidebar_top = chats[0].id if chats else None
        await self.query_one(Sidebar).show(chats, self.chat_id if highlight is None else highlight)

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one(Sidebar)
        sidebar.display = not sidebar.display

    def action_search(self) -> None:
        self.query_one(Sidebar).display = True
        self.query_one("#chat-search").focus()

    @on(Sidebar.Search)
    @recoverable
    async def _search_chats(self, message: Sidebar.Search) -> None:
        self._search = message.text
        await self._refresh_sidebar()

    @on(Sidebar.Open)
    @recoverable
    async def _open_chat(self, message: Sidebar.Open) -> None:
        if message.chat.id != self.chat_id:
            await self.show_chat(message.chat.id)
        self.query_one(Prompt).focus()

    @on(ChatListView.Action)
    def _chat_action(self, message: ChatListView.Action) -> None:
        chat = message.chat
        if message.action == "rename":
            async def rename(title: str | None) -> None:
                if title:
                    self.store.rename_chat(chat.id, title)
                    await self._refresh_sidebar(highlight=chat.id)

            self.push_screen(AskText("New name of the chat:", chat.title), rename)
        else:
            async def delete(confirmed: bool | None) -> None:
                if confirmed:
                    self._trash.put(chat.id)
                    if chat.id == self.chat_id:
                        await self.show_chat(None)
                    else:
                        await self._refresh_sidebar()
                    self.notify(f"Deleted {printable(chat.title)!r}: press u in the chat list within "
                                f"{self._trash.seconds:.0f} s to undo", markup=False)

            self.push_screen(Confirm(f"Delete the chat {chat.title!r} and its history?"), delete)

    @on(ChatListView.UndoDelete)
    @recoverable
    async def _undo_delete(self) -> None:
        chat_id = self._trash.restore()
        if chat_id is None:
            self.notify("No deleted chat to bring back", severity="warning")
        else:
            await self._refresh_sidebar(highlight=chat_id)

    # shutdown

    def on_unmount(self) -> None:
        with suppress(NotImplementedError, RuntimeError):
            for signum in EXIT_STATUS:
                asyncio.get_running_loop().remove_signal_handler(signum)
        self._trash.empty()
        turn = self._turn
        if turn is not None:
            turn.cancel.set()
            # The worker stores the answer as stopped at the next step; give it that long.
            turn.done.wait(timeout=10)
        if self.engine is not None and (turn is None or turn.done.is_set()):
            self.engine.close()


def stored_view(message: StoredMessage, version: tuple[int, int]) -> MessageView:
    return MessageView(message.role, message.content, thinking=message.thinking, status=message.status,
                       error=message.error, message_id=message.id, model=message.model, stats=message.stats,
                       version=version)


def key_bindings() -> list[Binding]:
    """Every binding that has an id, so that `ui.keymap` can remap it (for a key help listing)."""
    return [binding for _, bindings in binding_groups() for binding in bindings]


def binding_groups() -> list[tuple[str, list[Binding]]]:
    """The bindings with an id, by where they act."""
    owners = (("App", DgChatApp), ("Prompt", Prompt), ("Message", MessageView), ("Chat list", ChatListView),
              ("Model picker", ModelPicker), ("Settings", SettingsScreen), ("Replay", ReplayScreen),
              ("Dialogs", AskText), ("Dialogs", Confirm), ("Key help", HelpScreen))
    groups: dict[str, list[Binding]] = {}
    for title, owner in owners:
        groups.setdefault(title, []).extend(binding for binding in owner.BINDINGS
                                            if isinstance(binding, Binding) and binding.id)
    return list(groups.items())


def key_rows(app: DgChatApp) -> list[tuple[str, list[KeyRow]]]:
    """The help screen's rows: each binding with the keys it has now (`ui.keymap` applied)."""
    keymap = app.settings.ui.keymap
    return [(title, [KeyRow(key_label(keymap.get(b.id or "", b.key)), b.id or "", b.tooltip or b.description)
                     for b in bindings]) for title, bindings in binding_groups()]


def binding_ids() -> set[str]:
    return {binding.id for binding in key_bindings() if binding.id}
